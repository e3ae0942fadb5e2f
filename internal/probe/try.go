package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Attempt is what "probe try" prints, as one JSON line: what was tried and
// how it ended ("ok", an errno name, or what a child answered).
type Attempt struct {
	Attempt string `json:"attempt"`
	Target  string `json:"target,omitempty"`
	Result  string `json:"result"`
	Detail  string `json:"detail,omitempty"`
}

// try makes one attempt to do what a tenant must not, and prints it.
func try(args []string) {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: probe try ATTEMPT [ARGS]")
		os.Exit(2)
	}
	a := Attempt{Attempt: args[0], Target: strings.Join(args[1:], " ")}
	arg := func(i int) string {
		if i+1 >= len(args) {
			fmt.Fprintf(os.Stderr, "probe try %s: missing argument %d\n", args[0], i+1)
			os.Exit(2)
		}
		return args[i+1]
	}
	num := func(i int) int {
		n, err := strconv.Atoi(arg(i))
		if err != nil {
			fmt.Fprintf(os.Stderr, "probe try %s: %v\n", args[0], err)
			os.Exit(2)
		}
		return n
	}
	var err error
	switch args[0] {
	case "open":
		var f *os.File
		if f, err = os.OpenFile(arg(0), os.O_RDWR, 0); err == nil {
			_ = f.Close()
		}
	case "read":
		var b []byte
		b, err = os.ReadFile(arg(0))
		a.Detail = strings.TrimSpace(string(b))
	case "write":
		err = os.WriteFile(arg(0), []byte("written by a tenant\n"), 0o600)
	case "mknod":
		err = unix.Mknod(arg(0), unix.S_IFCHR|0o666, int(unix.Mkdev(uint32(num(1)), uint32(num(2)))))
	case "mount":
		err = unix.Mount("tmpfs", arg(0), "tmpfs", 0, "")
	case "kill":
		err = unix.Kill(num(0), unix.SIGKILL)
	case "ptrace":
		runtime.LockOSThread() // the tracer is the thread
		if err = unix.PtraceAttach(num(0)); err == nil {
			_ = unix.PtraceDetach(num(0))
		}
	case "dial":
		var c net.Conn
		if c, err = net.DialTimeout(arg(0), arg(1), 2*time.Second); err == nil {
			_ = c.Close()
		}
	case "userns":
		// A child in a new user namespace would hold every capability
		// there.
		cmd := exec.Command("/proc/self/exe", "whoami")
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWUSER}
		var out []byte
		out, err = cmd.Output()
		a.Detail = strings.TrimSpace(string(out))
	case "capset":
		err = raiseCapability(unix.CAP_SYS_ADMIN)
	case "setuid":
		// The result is the effective uid the setuid binary got.
		var out bytes.Buffer
		cmd := exec.Command(arg(0), "whoami")
		cmd.Stdout = &out
		if err = cmd.Run(); err == nil {
			a.Result = strings.TrimSpace(out.String())
		}
	case "fork":
		var started int
		started, err = forkMany(num(0))
		a.Detail = fmt.Sprintf("%d started", started)
	default:
		fmt.Fprintln(os.Stderr, "unknown attempt", args[0])
		os.Exit(2)
	}
	if a.Result == "" {
		a.Result = errName(err)
	}
	b, _ := json.Marshal(a)
	fmt.Println(string(b))
}

// raiseCapability asks for capability c in the thread's effective set.
func raiseCapability(c int) error {
	runtime.LockOSThread()
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return err
	}
	data[c/32].Effective |= 1 << (c % 32)
	data[c/32].Permitted |= 1 << (c % 32)
	return unix.Capset(&hdr, &data[0])
}

// forkMany starts n children that pause, stops at the first failure, and
// kills them all before it returns.
func forkMany(n int) (int, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var cmds []*exec.Cmd
	defer func() {
		for _, c := range cmds {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
	}()
	for len(cmds) < n {
		cmd := exec.CommandContext(ctx, "/proc/self/exe", "pause")
		if err := cmd.Start(); err != nil {
			return len(cmds), err
		}
		cmds = append(cmds, cmd)
	}
	return len(cmds), nil
}

// errName gives the errno's name (ENXIO, EPERM, ...), "ok", "timeout" or
// the error text.
func errName(err error) string {
	var errno syscall.Errno
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &errno) && unix.ErrnoName(errno) != "":
		return unix.ErrnoName(errno)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return "exit " + strconv.Itoa(exit.ExitCode())
	}
	return err.Error()
}
