// Package process is an isolation.Runtime that runs each "container" as a
// plain child process, for development machines without containerd. It
// isolates nothing, and says so; a program that uses only this runtime
// does not link containerd.
package process
