package persistence

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// A second Open of a directory this process holds is ErrLocked, naming
// this process; the first store keeps working, and once it is closed the
// directory opens again.
func TestOpenLockedInProcess(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Config{Dir: dir, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	for _, ro := range []bool{false, true} {
		_, err := Open(Config{Dir: dir, Logger: quietLogger(), ReadOnly: ro})
		var le *LockedError
		if !errors.Is(err, ErrLocked) || !errors.As(err, &le) {
			t.Fatalf("read-only %v: second open: %v, want ErrLocked", ro, err)
		}
		if le.PID != os.Getpid() {
			t.Errorf("read-only %v: pid %d, want this process's %d", ro, le.PID, os.Getpid())
		}
		want := fmt.Sprintf("data directory %s is in use by another chargeauth (pid %d)", dir, os.Getpid())
		if err.Error() != want {
			t.Errorf("message %q, want %q", err, want)
		}
	}
	mustAccept(t, s, "a")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := mustOpen(t, Config{Dir: dir, Logger: quietLogger()})
	if _, err := s2.Get("a"); err != nil {
		t.Errorf("after the holder closed: %v", err)
	}
}

// Another process holding the directory: Open is ErrLocked with that
// process's pid (read from the system's lock table), for a writer and a
// read-only reader alike; once it exits, Open succeeds.
func TestOpenLockedByAnotherProcess(t *testing.T) {
	if dir := os.Getenv("PERSISTENCE_TEST_HOLD_DIR"); dir != "" {
		holdDir(dir)
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestOpenLockedByAnotherProcess$")
	cmd.Env = append(os.Environ(), "PERSISTENCE_TEST_HOLD_DIR="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if l, _ := bufio.NewReader(stdout).ReadString('\n'); strings.TrimSpace(l) != "held" {
		t.Fatalf("the holder said %q, want held", l)
	}
	for _, ro := range []bool{false, true} {
		_, err := Open(Config{Dir: dir, Logger: quietLogger(), ReadOnly: ro})
		var le *LockedError
		if !errors.As(err, &le) || !errors.Is(err, ErrLocked) {
			t.Fatalf("read-only %v: open: %v, want ErrLocked", ro, err)
		}
		if le.PID != cmd.Process.Pid {
			t.Errorf("read-only %v: pid %d, want the holder's %d (%v)", ro, le.PID, cmd.Process.Pid, err)
		}
	}
	_ = stdin.Close() // the holder closes its store and exits
	if err := cmd.Wait(); err != nil {
		t.Fatalf("holder: %v", err)
	}
	mustOpen(t, Config{Dir: dir, Logger: quietLogger()})
}

// holdDir is the child of TestOpenLockedByAnotherProcess: it opens dir,
// says "held", and closes the store when its stdin closes.
func holdDir(dir string) {
	s, err := Open(Config{Dir: dir, Logger: quietLogger()})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(1)
	}
	fmt.Println("held")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	if err := s.Close(); err != nil {
		os.Exit(1)
	}
	os.Exit(0)
}

// An error that is not the lock (a directory that cannot be created) is not
// ErrLocked.
func TestOpenErrorNotLocked(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "file")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	_, err = Open(Config{Dir: f.Name() + "/db", Logger: quietLogger()})
	if err == nil || errors.Is(err, ErrLocked) {
		t.Errorf("open under a file: %v, want an error that is not ErrLocked", err)
	}
}
