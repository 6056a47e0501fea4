package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// markPrefix starts the mark appended to each build.
const markPrefix = "forkline-bench-build:"

// build is one build of the server: the binary with its mark at the end.
type build struct {
	name string // "a", "b"
	data []byte
}

// makeBuilds returns builds a and b of the binary at bin, and writes them
// next to it (bin-a, bin-b) for KEEP.
func makeBuilds(bin string) ([]build, error) {
	data, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	var out []build
	for _, name := range []string{"a", "b"} {
		b := build{name: name, data: append(bytes.Clone(data), "\n"+markPrefix+name+"\n"...)}
		if err := os.WriteFile(bin+"-"+name, b.data, 0o755); err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

// deploy is the path the parent runs from.
type deploy struct{ path string }

// install writes b next to the path and renames it into place, as a deploy
// does, and returns the installed file's identity and how long it took.
func (d deploy) install(b build) (os.FileInfo, time.Duration, error) {
	t0 := time.Now()
	tmp := d.path + ".new"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return nil, 0, err
	}
	_, err = f.Write(b.data)
	if cerr := f.Close(); err == nil {
		err = cerr // closed before the rename: an exec of a file open for writing fails (ETXTBSY)
	}
	if err != nil {
		return nil, 0, err
	}
	if err := os.Rename(tmp, d.path); err != nil {
		return nil, 0, err
	}
	fi, err := os.Stat(d.path)
	return fi, time.Since(t0), err
}

func newDeploy(dir string) (deploy, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return deploy{}, err
	}
	return deploy{path: filepath.Join(dir, "hello")}, nil
}

// exeCheck says whether pid runs the file installed as want (the same
// inode) and returns the mark at the end of what it runs.
func exeCheck(pid int, want os.FileInfo) (same bool, mark string, err error) {
	exe := "/proc/" + strconv.Itoa(pid) + "/exe"
	fi, err := os.Stat(exe)
	if err != nil {
		return false, "", err
	}
	f, err := os.Open(exe)
	if err != nil {
		return false, "", err
	}
	defer f.Close()
	var tail [64]byte
	off := max(fi.Size()-int64(len(tail)), 0)
	n, err := f.ReadAt(tail[:], off)
	if err != nil && err != io.EOF {
		return false, "", err
	}
	t := string(tail[:n])
	if i := strings.LastIndex(t, markPrefix); i >= 0 {
		mark = strings.TrimSpace(t[i+len(markPrefix):])
	}
	return os.SameFile(fi, want), mark, nil
}

// startTime is field 22 of /proc/<pid>/stat, the process's start time in
// clock ticks since boot: with the pid, it names one process.
func startTime(pid int) (string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", err
	}
	i := bytes.LastIndexByte(b, ')') // the command name may hold spaces and parentheses
	if i < 0 {
		return "", fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return "", fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	if f[0] == "Z" || f[0] == "X" {
		return "", fmt.Errorf("pid %d has exited", pid)
	}
	return f[19], nil
}
