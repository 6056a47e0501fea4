package harness

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
)

// Nginx is the reference server several suites compare with: nginx with
// Workers worker processes answering "Hello from worker=0 pid=<pid> gen=0"
// on 127.0.0.1:Port with reuseport, in the foreground, with everything
// under Dir.
type Nginx struct {
	Dir      string
	Port     int
	Workers  int
	LogLevel string   // error_log level; default warn
	Extra    []string // more http{} directives, e.g. "keepalive_requests 1000000"
}

// Write writes Dir/nginx.conf and returns the command that runs it.
func (n Nginx) Write() ([]string, error) {
	if err := os.MkdirAll(filepath.Join(n.Dir, "logs"), 0o755); err != nil {
		return nil, err
	}
	level := n.LogLevel
	if level == "" {
		level = "warn"
	}
	usr := ""
	if os.Geteuid() == 0 { // nginx's workers drop to this user
		usr = "user nobody " + nobodyGroup() + ";"
	}
	extra := ""
	for _, e := range n.Extra {
		extra += e + "; "
	}
	conf := fmt.Sprintf(nginxConf, usr, n.Workers, n.Dir, n.Dir, level,
		n.Dir, n.Dir, n.Dir, n.Dir, n.Dir, extra, n.Port)
	path := filepath.Join(n.Dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	return []string{"nginx", "-p", n.Dir, "-c", path}, nil
}

// ReloadCommand is what reloads this nginx.
func (n Nginx) ReloadCommand() string {
	return "nginx -p " + n.Dir + " -c " + filepath.Join(n.Dir, "nginx.conf") + " -s reload"
}

func nobodyGroup() string {
	if u, err := user.Lookup("nobody"); err == nil {
		if g, err := user.LookupGroupId(u.Gid); err == nil {
			return g.Name
		}
	}
	return "nogroup"
}

const nginxConf = `%s
worker_processes %d;
daemon off;
master_process on;
pid %s/nginx.pid;
error_log %s/logs/error.log %s;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path %s/client_body;
    proxy_temp_path %s/proxy;
    fastcgi_temp_path %s/fastcgi;
    uwsgi_temp_path %s/uwsgi;
    scgi_temp_path %s/scgi;
    %s
    server {
        listen 127.0.0.1:%d reuseport;
        default_type text/plain;
        location / { return 200 "Hello from worker=0 pid=$pid gen=0\n"; }
    }
}
`
