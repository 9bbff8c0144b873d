//go:build unix

package node

import "syscall"

// execve replaces the process: ReexecWithSysmonAwake.
var execve = syscall.Exec
