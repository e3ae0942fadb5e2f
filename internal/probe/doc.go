// Command probe is run inside containers by the isolation tests. It reports
// what the container can see and do, and plays the workloads the tests need
// (a sleeper, a process that ignores SIGTERM, a memory hog, a chatty logger).
//
// Usage:
//
//	probe report [-open a,b,...] [-write a,b,...]  one JSON line: identity, capabilities, opens, writes, interfaces
//	probe sleep                                   sleep until SIGTERM or SIGINT, print "term <signal>", exit 0
//	probe ignore-term                             ignore SIGTERM and SIGINT, sleep until killed
//	probe alloc -mib N                            touch N MiB, 1 MiB at a time, then sleep
//	probe spam -bytes N [-then-sleep]             write N bytes of 65-byte numbered lines to stdout
//	probe exit -code N                            exit with code N
//	probe whoami                                  print "euid=N"
//	probe pause                                   sleep until killed
//	probe listen [-addr :8080]                    accept TCP connections, greet and close each
//	probe try ATTEMPT [ARGS]                      one JSON line: an attempt to break out and how it ended
//
// The attempts of probe try:
//
//	open PATH, read PATH, write PATH      open read-write; read; create and keep
//	mknod PATH MAJOR MINOR                make a character device node
//	mount DIR                             mount a tmpfs
//	kill PID, ptrace PID                  SIGKILL; PTRACE_ATTACH
//	dial NETWORK ADDRESS                  connect (2 s deadline)
//	userns                                run a child in a new user namespace
//	capset                                raise CAP_SYS_ADMIN
//	setuid PATH                           run PATH whoami: the result is the euid it had
//	fork N                                start N children that pause
//
// Opens, writes and attempts are reported by errno name (ok, ENXIO, ENOENT,
// EPERM, EACCES, EROFS, ...). It is built static (CGO_ENABLED=0) by internal/ociimage.
package main
