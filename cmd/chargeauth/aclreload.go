package main

import (
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/chargeauth/chargeauth/http/authz"
)

// reloadACL reloads the ACL file on SIGHUP and, every interval (0: never),
// when the file changes. It returns a func that stops both.
func reloadACL(srv *authz.Server, path string, every time.Duration) (stop func()) {
	done := make(chan struct{})
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for {
			select {
			case <-done:
				return
			case <-hup:
				_ = srv.Reload(path) // logged; the old ACL stays on error
			}
		}
	}()
	if every > 0 {
		go srv.Watch(path, every, done)
	}
	return func() {
		signal.Stop(hup)
		close(done)
	}
}
