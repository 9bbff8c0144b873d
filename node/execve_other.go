//go:build !unix

package node

import "errors"

// execve is not offered here: ReexecWithSysmonAwake carries on without it.
func execve(string, []string, []string) error { return errors.ErrUnsupported }
