package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/gpufarm/gpufarm/mining"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := run(ctx, os.Stdout, os.Stderr, os.Args[1:])
	stop()
	os.Exit(code)
}

// maxFile caps the reply read from a file, as the client caps a live one.
const maxFile = mining.DefaultMaxBytes

// run is the command without the process around it: 0 when the stats were
// printed, 1 when the reply could not be read, 2 on bad flags.
func run(ctx context.Context, stdout, stderr io.Writer, args []string) int {
	fs := flag.NewFlagSet("minerstats", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var names []string
	for _, a := range mining.Adapters() {
		names = append(names, a.Name())
	}
	minerName := fs.String("miner", "", "the miner: "+strings.Join(names, ", "))
	file := fs.String("file", "", "read the reply from this file")
	endpoint := fs.String("endpoint", "", "the API call the file answers (default: told from the reply)")
	url := fs.String("url", "", "poll the live miner at this address (host:port, http:// or tcp:// optional)")
	token := fs.String("token", "", "the miner's API token, with -url")
	timeout := fs.Duration("timeout", mining.DefaultTimeout, "how long to wait for a live miner")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	var problems []string
	a, err := mining.AdapterByName(*minerName)
	if err != nil {
		problems = append(problems, "-miner: "+err.Error())
	}
	if (*file == "") == (*url == "") {
		problems = append(problems, "give one of -file and -url")
	}
	if *endpoint != "" && *file == "" {
		problems = append(problems, "-endpoint goes with -file")
	}
	if fs.NArg() > 0 {
		problems = append(problems, fmt.Sprintf("unexpected arguments %q", fs.Args()))
	}
	if len(problems) > 0 {
		fmt.Fprintln(stderr, "minerstats:", strings.Join(problems, "; "))
		return 2
	}
	var out any
	if *file != "" {
		out, err = fromFile(a, *file, *endpoint)
	} else {
		out, err = fromURL(ctx, a, *url, *token, *timeout)
	}
	if err != nil {
		fmt.Fprintln(stderr, "minerstats:", err)
		return 1
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		fmt.Fprintln(stderr, "minerstats:", err)
		return 1
	}
	return 0
}

func fromFile(a mining.Adapter, path, endpoint string) (any, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	body, err := io.ReadAll(io.LimitReader(f, maxFile+1))
	if err != nil {
		return nil, err
	}
	if len(body) > maxFile {
		return nil, fmt.Errorf("%s: %w: larger than %d bytes", path, mining.ErrMalformed, maxFile)
	}
	if endpoint == "" {
		if endpoint = a.Detect(body); endpoint == "" {
			var eps []string
			for _, r := range a.Requests("") {
				eps = append(eps, r.Endpoint)
			}
			return nil, fmt.Errorf("%s: %w: not a reply %s gives; if it is one, say which with -endpoint (%s)",
				path, mining.ErrMalformed, a.Name(), strings.Join(eps, ", "))
		}
	}
	var st mining.Stats
	if err := a.Parse(endpoint, body, &st); err != nil {
		return nil, fmt.Errorf("%s as %s %s: %w", path, a.Name(), endpoint, err)
	}
	return struct {
		Endpoint string       `json:"endpoint"`
		Stats    mining.Stats `json:"stats"`
	}{endpoint, st}, nil
}

func fromURL(ctx context.Context, a mining.Adapter, url, token string, timeout time.Duration) (any, error) {
	addr := strings.TrimSuffix(url, "/")
	for _, scheme := range []string{"http://", "tcp://"} {
		addr = strings.TrimPrefix(addr, scheme)
	}
	c, err := mining.NewClient(a, addr, mining.WithToken(token), mining.WithTimeout(timeout))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	r, err := c.Poll(ctx)
	if err != nil {
		return nil, err
	}
	return struct {
		Addr  string       `json:"addr"`
		At    time.Time    `json:"at"`
		Stats mining.Stats `json:"stats"`
	}{addr, r.At, r.Stats}, nil
}
