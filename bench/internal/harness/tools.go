package harness

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// aptInstallable are the tools Need installs with apt-get when it runs as
// root, as the scripts did; the others it only asks for.
var aptInstallable = map[string]string{"wrk": "wrk", "nginx": "nginx"}

// Need checks that the tools are on PATH (with /usr/sbin and /sbin, where
// Debian puts nginx), installing wrk and nginx with apt-get when missing
// and running as root.
func (s *Suite) Need(tools ...string) error {
	if !strings.Contains(os.Getenv("PATH"), "/usr/sbin") {
		os.Setenv("PATH", os.Getenv("PATH")+":/usr/sbin:/sbin")
	}
	var missing, install []string
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, t)
			if p, ok := aptInstallable[t]; ok {
				install = append(install, p)
			}
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if len(install) == len(missing) && os.Geteuid() == 0 {
		if _, err := exec.LookPath("apt-get"); err == nil {
			return s.aptInstall(install)
		}
	}
	return fmt.Errorf("missing %s (apt-get install -y %s; or leave out what needs it)", strings.Join(missing, ", "), strings.Join(install, " "))
}

func (s *Suite) aptInstall(pkgs []string) error {
	Logf("installing %s with apt-get", strings.Join(pkgs, " "))
	for _, args := range [][]string{{"update", "-qq"}, append([]string{"install", "-y", "-qq"}, pkgs...)} {
		cmd := exec.CommandContext(s.Ctx, "apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("apt-get %s: %w", args[0], err)
		}
	}
	return nil
}

// Versions returns "<tool> <version>" for each tool; "fasthttp" is the
// version the bench module requires.
func (s *Suite) Versions(tools ...string) []string {
	out := make([]string, 0, len(tools))
	for _, t := range tools {
		v, err := s.version(t)
		if err != nil {
			v = t + " ?"
		}
		out = append(out, v)
	}
	return out
}

func (s *Suite) version(tool string) (string, error) {
	first := func(args ...string) (string, error) {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Dir = s.Bench
		out, _ := cmd.CombinedOutput() // wrk -v exits 1
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		if line == "" {
			return "", errors.New("no output")
		}
		return line, nil
	}
	switch tool {
	case "wrk": // "wrk debian/4.1.0-3+b2 [epoll] Copyright ..."
		line, err := first("wrk", "-v")
		f := strings.Fields(line)
		if err != nil || len(f) < 2 {
			return "", errors.New("no version")
		}
		return "wrk " + f[1], nil
	case "nginx": // "nginx version: nginx/1.22.1"
		line, err := first("nginx", "-v")
		return strings.TrimPrefix(line, "nginx version: "), err
	case "node":
		line, err := first("node", "--version")
		return "node " + line, err
	case "gunicorn": // "gunicorn (version 20.1.0)"
		line, err := first("gunicorn", "--version")
		return strings.NewReplacer("(version ", "", ")", "").Replace(line), err
	case "fasthttp":
		line, err := first("go", "list", "-m", "-f", "{{.Version}}", "github.com/valyala/fasthttp")
		return "fasthttp " + line, err
	}
	line, err := first(tool, "--version")
	return tool + " " + line, err
}
