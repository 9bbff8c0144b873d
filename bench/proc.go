package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/valyala/fasthttp"
)

// Helpers of the workloads whose servers are processes of their own
// (merit, fleet): build the binary, reserve ports, start a process, wait
// until it serves.

// buildChargeauth returns bin, or, if bin is "", a chargeauth built from
// ./cmd/chargeauth into a temporary directory that cleanup removes.
func buildChargeauth(bin string) (_ string, cleanup func(), err error) {
	if bin != "" {
		return bin, func() {}, nil
	}
	dir, err := os.MkdirTemp("", "chargeauth-bench-bin-")
	if err != nil {
		return "", nil, err
	}
	bin = filepath.Join(dir, "chargeauth")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/chargeauth/chargeauth/cmd/chargeauth").CombinedOutput()
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, func() { os.RemoveAll(dir) }, nil
}

// reserveAddrs returns n free 127.0.0.1 addresses (listened on and closed:
// a child process binds them next).
func reserveAddrs(n int) ([]string, error) {
	addrs := make([]string, n)
	for i := range addrs {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		addrs[i] = ln.Addr().String()
		ln.Close()
	}
	return addrs, nil
}

// startProcess starts bin with args (env added to this process's, if
// set) as a server whose directory dir stop removes. Its stderr is ours.
func startProcess(bin string, args, env []string, dir string) (*server, error) {
	srv := &server{dir: dir, done: make(chan error, 1)}
	srv.cmd = exec.Command(bin, args...)
	if len(env) > 0 {
		srv.cmd.Env = append(os.Environ(), env...)
	}
	srv.cmd.Stderr = os.Stderr
	if err := srv.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { srv.done <- srv.cmd.Wait() }()
	return srv, nil
}

// waitReady waits until GET url answers 200 (url set) or until a TCP
// connection to addr succeeds (url == "", addr set), for at most 30s; it
// fails at once if the process exits.
func (s *server) waitReady(url, addr string) error {
	client := &fasthttp.Client{}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if url != "" {
			code, _, err := client.Get(nil, url)
			if err == nil && code == fasthttp.StatusOK {
				return nil
			}
		} else if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return nil
		}
		select {
		case werr := <-s.done:
			s.done <- werr // for stop
			return fmt.Errorf("%s exited before it was ready: %w", filepath.Base(s.cmd.Path), werr)
		default:
		}
		if time.Now().After(deadline) {
			return errors.New(filepath.Base(s.cmd.Path) + " not ready after 30s")
		}
	}
}
