package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// Report is what "probe report" prints, as one JSON line.
type Report struct {
	UID        int               `json:"uid"`
	GID        int               `json:"gid"`
	CapEff     string            `json:"capEff"`
	CapBnd     string            `json:"capBnd"`
	NoNewPrivs string            `json:"noNewPrivs"`
	Seccomp    string            `json:"seccomp"`
	Open       map[string]string `json:"open"`
	Write      map[string]string `json:"write"`
	Interfaces []string          `json:"interfaces"`
	Env        []string          `json:"env"`
	Cwd        string            `json:"cwd"`
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: probe report|sleep|ignore-term|alloc|spam|exit|try|whoami|pause|listen")
		os.Exit(2)
	}
	cmd, args := os.Args[1], os.Args[2:]
	fs := flag.NewFlagSet(cmd, flag.ExitOnError)
	switch cmd {
	case "report":
		open := fs.String("open", "", "comma-separated paths to open read-write")
		write := fs.String("write", "", "comma-separated directories to create a file in")
		_ = fs.Parse(args)
		report(split(*open), split(*write))
	case "sleep":
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
		fmt.Println("sleeping")
		s := <-sigs
		fmt.Println("term", s)
	case "ignore-term":
		signal.Ignore(syscall.SIGTERM, syscall.SIGINT)
		fmt.Println("ignoring SIGTERM")
		for {
			time.Sleep(time.Hour)
		}
	case "alloc":
		mib := fs.Int("mib", 64, "MiB to touch")
		_ = fs.Parse(args)
		var keep [][]byte
		for i := 0; i < *mib; i++ {
			b := make([]byte, 1<<20)
			for j := range b {
				b[j] = byte(i + j)
			}
			keep = append(keep, b)
		}
		fmt.Println("allocated", len(keep), "MiB")
		time.Sleep(time.Hour)
	case "spam":
		n := fs.Int("bytes", 1<<20, "bytes to write")
		then := fs.Bool("then-sleep", false, "sleep after writing")
		_ = fs.Parse(args)
		w := bufio.NewWriter(os.Stdout)
		written := 0
		for i := 0; written < *n; i++ {
			k, _ := fmt.Fprintf(w, "line %08d %s\n", i, strings.Repeat("x", 50))
			written += k
		}
		_ = w.Flush()
		if *then {
			time.Sleep(time.Hour)
		}
	case "try":
		try(args)
	case "whoami":
		fmt.Printf("euid=%d\n", os.Geteuid())
	case "listen":
		addr := fs.String("addr", ":8080", "TCP address to accept connections on")
		_ = fs.Parse(args)
		listen(*addr)
	case "pause":
		for {
			time.Sleep(time.Hour)
		}
	case "exit":
		code := fs.Int("code", 0, "exit code")
		_ = fs.Parse(args)
		fmt.Println("exiting with", *code)
		os.Exit(*code)
	default:
		fmt.Fprintln(os.Stderr, "unknown command", cmd)
		os.Exit(2)
	}
}

func split(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func report(open, write []string) {
	r := Report{UID: os.Getuid(), GID: os.Getgid(), Open: map[string]string{}, Write: map[string]string{}, Env: os.Environ()}
	r.Cwd, _ = os.Getwd()
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			v = strings.TrimSpace(v)
			switch k {
			case "CapEff":
				r.CapEff = v
			case "CapBnd":
				r.CapBnd = v
			case "NoNewPrivs":
				r.NoNewPrivs = v
			case "Seccomp":
				r.Seccomp = v
			}
		}
	}
	for _, p := range open {
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err == nil {
			_ = f.Close()
		}
		r.Open[p] = errName(err)
	}
	for _, dir := range write {
		p := strings.TrimSuffix(dir, "/") + "/probe-write"
		f, err := os.Create(p)
		if err == nil {
			_ = f.Close()
			_ = os.Remove(p)
		}
		r.Write[dir] = errName(err)
	}
	if ifs, err := net.Interfaces(); err == nil {
		for _, i := range ifs {
			r.Interfaces = append(r.Interfaces, i.Name)
		}
	}
	b, _ := json.Marshal(r)
	fmt.Println(string(b))
}

// listen accepts connections on addr and closes each after a greeting.
func listen(addr string) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println("listening on", l.Addr())
	for {
		c, err := l.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Fprintln(c, "hello from the probe")
		_ = c.Close()
	}
}
