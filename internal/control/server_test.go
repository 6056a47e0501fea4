//go:build unix

package control

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestCommands(t *testing.T) {
	tests := []struct {
		name, req string
		h         *fakeHandler   // nil: one that succeeds
		want      map[string]any // fields of the answer
		calls     []string
	}{
		{name: "status", req: `{"cmd":"status"}`, want: map[string]any{"ok": true}},
		{name: "reload", req: `{"cmd":"reload"}`, want: map[string]any{"ok": true, "generation": 3.0}, calls: []string{"reload"}},
		{name: "reload fails", req: `{"cmd":"reload"}`, h: &fakeHandler{reloadErr: errors.New("worker 2 failed: boom")},
			want: map[string]any{"ok": false, "error": "worker 2 failed: boom"}, calls: []string{"reload"}},
		{name: "scale absolute", req: `{"cmd":"scale","n":"6"}`, want: map[string]any{"ok": true, "workers": 6.0, "was": 4.0}, calls: []string{"scale 6"}},
		{name: "scale +1", req: `{"cmd":"scale","n":"+1"}`, want: map[string]any{"ok": true, "workers": 5.0}, calls: []string{"scale 5"}},
		{name: "scale -1", req: `{"cmd":"scale","n":"-1"}`, want: map[string]any{"ok": true, "workers": 3.0}, calls: []string{"scale 3"}},
		{name: "scale +3", req: `{"cmd":"scale","n":"+3"}`, want: map[string]any{"ok": true, "workers": 7.0}, calls: []string{"scale 7"}},
		{name: "scale -3", req: `{"cmd":"scale","n":"-3"}`, want: map[string]any{"ok": true, "workers": 1.0}, calls: []string{"scale 1"}},
		{name: "kill default TERM", req: `{"cmd":"kill","id":2}`, want: map[string]any{"ok": true}, calls: []string{"kill 2 15"}},
		{name: "kill KILL", req: `{"cmd":"kill","id":2,"signal":"KILL"}`, calls: []string{"kill 2 9"}},
		{name: "kill SIGHUP", req: `{"cmd":"kill","id":1,"signal":"SIGHUP"}`, calls: []string{"kill 1 1"}},
		{name: "kill lower case", req: `{"cmd":"kill","id":3,"signal":"usr1"}`, calls: []string{"kill 3 " + strconv.Itoa(int(unix.SIGUSR1))}},
		{name: "kill by number", req: `{"cmd":"kill","id":3,"signal":"9"}`, calls: []string{"kill 3 9"}},
		{name: "upgrade is reserved", req: `{"cmd":"upgrade"}`, h: &fakeHandler{upgradeErr: errors.New("upgrade is not supported")},
			want: map[string]any{"ok": false, "error": "upgrade is not supported"}, calls: []string{"upgrade"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := tt.h
			if h == nil {
				h = &fakeHandler{}
			}
			h.status = testStatus
			s := serve(t, h)
			a := dialRaw(t, s.path).do(tt.req)
			if tt.want == nil {
				tt.want = map[string]any{"ok": true}
			}
			for k, v := range tt.want {
				if a[k] != v {
					t.Errorf("answer %v: %s is %v, want %v", a, k, a[k], v)
				}
			}
			if got := h.Calls(); !slices.Equal(got, tt.calls) {
				t.Errorf("calls %q, want %q", got, tt.calls)
			}
		})
	}
}

func TestStatusAnswer(t *testing.T) {
	s := serve(t, &fakeHandler{status: testStatus})
	c, err := Dial(s.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st, err := c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.PID != 4242 || st.Generation != 3 || st.Workers != 4 || len(st.Slots) != 1 || st.Slots[0] != testStatus.Slots[0] {
		t.Errorf("status %+v, want %+v", st, testStatus)
	}
}

// Every bad line gets an error line on the same connection, which goes on
// serving, and the handler hears of none of them.
func TestBadRequests(t *testing.T) {
	tests := []struct{ req, want string }{
		{`garbage`, "malformed request"},
		{`{"cmd":"status"`, "malformed request"},
		{`{"cmd":"status"} {"cmd":"reload"}`, "more than one JSON value"},
		{`{"cmd":"reload"}}`, "more than one JSON value"},
		{`[]`, "malformed request"},
		{`null`, `unknown command ""`},
		{`{}`, `unknown command ""`},
		{`{"cmd":"frobnicate"}`, `unknown command "frobnicate"`},
		{`{"cmd":"RELOAD"}`, `unknown command "RELOAD"`},
		{`{"cmd":"reload","force":true}`, `unknown field "force"`},
		{`{"cmd":"stop","n":"1"}`, "stop takes no arguments"},
		{`{"cmd":"status","id":1}`, "status takes no arguments"},
		{`{"cmd":"scale"}`, `n is ""`},
		{`{"cmd":"scale","n":"x"}`, `n is "x"`},
		{`{"cmd":"scale","n":"1.5"}`, `n is "1.5"`},
		{`{"cmd":"scale","n":4}`, "malformed request"},
		{`{"cmd":"scale","n":"0"}`, "1 at least"},
		{`{"cmd":"scale","n":"-4"}`, "would leave 0 workers of 4"},
		{`{"cmd":"scale","n":"+1","id":2}`, "scale takes only n"},
		{`{"cmd":"kill"}`, "kill needs id"},
		{`{"cmd":"kill","id":0}`, "kill needs id"},
		{`{"cmd":"kill","id":-1}`, "kill needs id"},
		{`{"cmd":"kill","id":"2"}`, "malformed request"},
		{`{"cmd":"kill","id":2,"signal":"FOO"}`, `unknown signal "FOO"`},
		{`{"cmd":"kill","id":2,"signal":"0"}`, `unknown signal "0"`},
		{`{"cmd":"kill","id":2,"signal":"999"}`, `unknown signal "999"`},
		{`{"cmd":"kill","id":2,"n":"1"}`, "kill takes only id and signal"},
	}
	h := &fakeHandler{status: testStatus}
	s := serve(t, h)
	rc := dialRaw(t, s.path)
	for _, tt := range tests {
		a := rc.do(tt.req)
		if a["ok"] != false || !strings.Contains(a["error"].(string), tt.want) {
			t.Errorf("%s: answer %v, want an error with %q", tt.req, a, tt.want)
		}
	}
	if a := rc.do(`{"cmd":"status"}`); a["ok"] != true {
		t.Errorf("status after the errors: %v", a)
	}
	if calls := h.Calls(); len(calls) > 0 {
		t.Errorf("the handler was called: %q", calls)
	}
}

func TestOversizedLine(t *testing.T) {
	h := &fakeHandler{status: testStatus}
	s := serve(t, h)
	rc := dialRaw(t, s.path)
	long := `{"cmd":"reload","x":"` + strings.Repeat("x", maxLine) + `"}`
	go rc.c.Write([]byte(long + "\n" + `{"cmd":"status"}` + "\n")) // the answer comes before the whole line is read
	if a := rc.read(); a["ok"] != false || !strings.Contains(a["error"].(string), "over 64 KiB") {
		t.Errorf("answer to a long line: %v", a)
	}
	if a := rc.read(); a["ok"] != true || a["status"] == nil {
		t.Errorf("answer to the status after it: %v", a)
	}
	if calls := h.Calls(); len(calls) > 0 {
		t.Errorf("the handler was called: %q", calls)
	}
}

func TestCommandsInOrder(t *testing.T) {
	h := &fakeHandler{status: testStatus}
	s := serve(t, h)
	rc := dialRaw(t, s.path)
	rc.send(`{"cmd":"scale","n":"+1"}` + "\n\n" + `{"cmd":"kill","id":1}` + "\n" + `{"cmd":"reload"}` + "\n")
	for i, want := range []string{"workers", "ok", "generation"} {
		if a := rc.read(); a["ok"] != true || a[want] == nil {
			t.Errorf("answer %d: %v, want %s", i, a, want)
		}
	}
	if got, want := h.Calls(), []string{"scale 5", "kill 1 15", "reload"}; !slices.Equal(got, want) {
		t.Errorf("calls %q, want %q", got, want)
	}
}

// A client that shuts its side down after its last line, without a
// newline, gets its answer, then EOF.
func TestLastLineWithoutNewline(t *testing.T) {
	s := serve(t, &fakeHandler{status: testStatus})
	rc := dialRaw(t, s.path)
	rc.send(`{"cmd":"status"}`)
	rc.c.CloseWrite()
	if a := rc.read(); a["ok"] != true {
		t.Errorf("answer: %v", a)
	}
	rc.eof()
}

// A client that connects and says nothing holds up neither another client
// nor the end of Serve.
func TestSilentClient(t *testing.T) {
	s := serve(t, &fakeHandler{status: testStatus})
	silent := dialRaw(t, s.path)
	if a := dialRaw(t, s.path).do(`{"cmd":"status"}`); a["ok"] != true {
		t.Errorf("answer beside a silent client: %v", a)
	}
	if err := s.stop(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	silent.eof()
}

// Serve ends while a reload is in flight: the reload's ctx ends, and so
// does the connection.
func TestServeEndsHandlerCalls(t *testing.T) {
	h := &fakeHandler{status: testStatus, reloading: make(chan struct{})}
	s := serve(t, h)
	rc := dialRaw(t, s.path)
	rc.send(`{"cmd":"reload"}` + "\n")
	<-h.reloading
	if err := s.stop(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	// The answer saying "context canceled" may or may not make it.
	for {
		if _, err := rc.r.ReadBytes('\n'); err != nil {
			break
		}
	}
}

func TestEvents(t *testing.T) {
	h := &fakeHandler{status: testStatus, events: make(chan Event)}
	s := serve(t, h)
	c, err := Dial(s.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sent := []Event{{Type: "fork", ID: 1, PID: 10, Gen: 2}, {Type: "reloaded", Gen: 2, Err: "boom"}}
	done := make(chan error, 1)
	var got []Event
	go func() { done <- c.Events(context.Background(), func(ev Event) { got = append(got, ev) }) }()
	for _, ev := range sent {
		h.events <- ev // unbuffered: taken once the server streams
	}
	close(h.events) // the cluster stopped
	if err := <-done; err != nil {
		t.Fatalf("Events: %v", err)
	}
	if !slices.Equal(got, sent) {
		t.Errorf("events %+v, want %+v", got, sent)
	}
}

// A client that leaves a stream ends its subscription.
func TestEventsClientLeaves(t *testing.T) {
	h := &fakeHandler{status: testStatus, events: make(chan Event), subscribed: make(chan context.Context, 1)}
	s := serve(t, h)
	rc := dialRaw(t, s.path)
	if a := rc.do(`{"cmd":"events"}`); a["ok"] != true {
		t.Fatalf("answer: %v", a)
	}
	ctx := <-h.subscribed
	rc.c.Close()
	<-ctx.Done()
}

func TestEventsFail(t *testing.T) {
	s := serve(t, &fakeHandler{status: testStatus})
	rc := dialRaw(t, s.path)
	if a := rc.do(`{"cmd":"events"}`); a["ok"] != false || a["error"] != "no events here" {
		t.Fatalf("answer: %v", a)
	}
	if a := rc.do(`{"cmd":"status"}`); a["ok"] != true {
		t.Fatalf("answer after: %v", a)
	}
}

// Stop subscribes, then stops, then streams until the cluster has stopped.
func TestStop(t *testing.T) {
	h := &fakeHandler{status: testStatus, events: make(chan Event)}
	s := serve(t, h)
	c, err := Dial(s.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	done := make(chan error, 1)
	var got []Event
	go func() { done <- c.Stop(context.Background(), func(ev Event) { got = append(got, ev) }) }()
	h.events <- Event{Type: "exit", ID: 1, Asked: true, Reason: "stop"}
	close(h.events)
	if err := <-done; err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if len(got) != 1 || got[0].Type != "exit" {
		t.Errorf("events %+v", got)
	}
	if got, want := h.Calls(), []string{"events", "stop"}; !slices.Equal(got, want) {
		t.Errorf("calls %q, want %q", got, want)
	}
}

// Without events, a stop's stream is only the EOF when Serve ends.
func TestStopWithoutEvents(t *testing.T) {
	h := &fakeHandler{status: testStatus}
	s := serve(t, h)
	rc := dialRaw(t, s.path)
	if a := rc.do(`{"cmd":"stop"}`); a["ok"] != true {
		t.Fatalf("answer: %v", a)
	}
	if err := s.stop(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	rc.eof()
}

func TestClientCtx(t *testing.T) {
	h := &fakeHandler{status: testStatus, reloading: make(chan struct{})}
	s := serve(t, h)
	c, err := Dial(s.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-h.reloading
		cancel()
	}()
	if _, err := c.Do(ctx, Request{Cmd: "reload"}); !errors.Is(err, context.Canceled) {
		t.Errorf("Do: %v, want context.Canceled", err)
	}
}

func TestParseSignal(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want syscall.Signal
	}{
		{"", unix.SIGTERM}, {"TERM", unix.SIGTERM}, {"SIGTERM", unix.SIGTERM}, {"term", unix.SIGTERM},
		{"sigkill", unix.SIGKILL}, {"15", unix.SIGTERM}, {"USR2", unix.SIGUSR2}, {"Quit", unix.SIGQUIT},
	} {
		if got, err := parseSignal(tt.in); err != nil || got != tt.want {
			t.Errorf("parseSignal(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	for _, in := range []string{"FOO", "SIG", "0", "-9", "9x", "SIGTERM "} {
		if sig, err := parseSignal(in); err == nil {
			t.Errorf("parseSignal(%q) = %v, want an error", in, sig)
		}
	}
}
