package harness

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Report is a results file: a title, the suite's own header lines (after
// the stamp: the load, the knobs' meaning...), and the body.
type Report struct {
	Title  string
	Tools  []string // tools whose versions the stamp names: "wrk", "nginx", "node", "gunicorn", "fasthttp"
	Header []string // more "- ..." lines after the stamp
	Body   string
}

// Text is the whole file: the title, then the stamp (commit, date,
// machine, tools, the command that repeats the run), then the rest.
func (s *Suite) Text(r Report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n\n", r.Title)
	fmt.Fprintf(&b, "- Commit: `%s`\n", Commit(s.Root))
	fmt.Fprintf(&b, "- Date: %s\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "- Machine: %s\n", Machine())
	if len(r.Tools) > 0 {
		fmt.Fprintf(&b, "- Tools: %s\n", strings.Join(s.Versions(r.Tools...), ", "))
	}
	fmt.Fprintf(&b, "- Command: `%s`\n", s.Knobs.Invocation())
	for _, h := range r.Header {
		fmt.Fprintf(&b, "- %s\n", h)
	}
	b.WriteString("\n")
	b.WriteString(strings.TrimRight(r.Body, "\n"))
	b.WriteString("\n")
	return b.String()
}

// WriteResults writes r to the RESULTS file (bench/results/<suite>.md by
// default; nothing if RESULTS is empty) and returns its text.
func (s *Suite) WriteResults(r Report) (string, error) {
	text := s.Text(r)
	path := *s.Knobs.results
	if path == "" {
		return text, nil
	}
	if !filepath.IsAbs(path) {
		path = filepath.Join(s.Bench, "results", path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return text, err
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		return text, err
	}
	Logf("wrote %s", path)
	return text, nil
}

// Commit is the short hash of the repository's HEAD, with "-dirty" when
// the tree has changes (tracked or not) that the measured binaries may
// include. GIT_OPTIONAL_LOCKS=0 keeps git status from refreshing the
// index: the benchmark only reads the repository.
func Commit(root string) string {
	head, err := git(root, "rev-parse", "--short", "HEAD")
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	status, err := git(root, "status", "--porcelain")
	if err != nil || status != "" {
		head += "-dirty"
	}
	return head
}

func git(root string, args ...string) (string, error) {
	cmd := exec.Command("git", append([]string{"-C", root}, args...)...)
	cmd.Env = append(os.Environ(), "GIT_OPTIONAL_LOCKS=0")
	out, err := cmd.Output()
	return strings.TrimSpace(string(out)), err
}

// Machine names the kernel, the CPUs and the Go toolchain that builds the
// binaries under test.
func Machine() string {
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	model := "?"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range bytes.Lines(b) {
			if k, v, ok := bytes.Cut(line, []byte(":")); ok && string(bytes.TrimSpace(k)) == "model name" {
				model = string(bytes.TrimSpace(v))
				break
			}
		}
	}
	gover := runtime.Version()
	if out, err := exec.Command("go", "version").Output(); err == nil {
		gover = strings.TrimPrefix(strings.TrimSpace(string(out)), "go version ")
	}
	return fmt.Sprintf("kernel `%s`, CPUs (nproc): %d, %s, %s", strings.TrimSpace(string(kernel)), runtime.NumCPU(), model, gover)
}
