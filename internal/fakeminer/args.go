package main

import (
	"fmt"
	"net"
	"slices"
	"strings"
)

// apis are the miners whose API the fake miner serves, with the flags of
// the real miner's command line it reads when run as that miner: where
// its API listens (an address, or a host and a port), the API token, and
// the algorithm.
var apis = map[string]struct {
	tcp                          bool // a TCP JSON API, not HTTP
	addr, host, port, token, alg string
}{
	"trex":         {addr: "--api-bind-http", alg: "-a"},
	"lolminer":     {host: "--apihost", port: "--apiport", alg: "--algo"},
	"xmrig":        {host: "--http-host", port: "--http-port", token: "--http-access-token", alg: "-a"},
	"gminer":       {port: "--api", alg: "--algo"},
	"nbminer":      {addr: "--api", alg: "-a"},
	"teamredminer": {tcp: true, addr: "--api_listen", alg: "-a"},
	"rigel":        {addr: "--api-bind", alg: "-a"},
	"srbminer":     {port: "--api-port", alg: "--algorithm"},
	"bzminer":      {host: "--http_address", port: "--http_port", token: "--http_password", alg: "-a"},
	"claymore":     {tcp: true, addr: "-mport", token: "-mpsw"},
	"phoenixminer": {tcp: true, addr: "-cdmport", token: "-cdmpass", alg: "-coin"},
	"ethminer":     {tcp: true, addr: "--api-bind", token: "--api-password"},
	"excavator":    {tcp: true, host: "-i", port: "-p"},
}

func apiNames() []string {
	var out []string
	for k := range apis {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// minerArgs is what the real miner's command line says.
type minerArgs struct {
	listen string // "" when the arguments name no API address
	token  string
	algo   string
}

// parseMinerArgs reads the real miner's arguments (after "--") as that
// miner would: "-flag value" or "-flag=value". Claymore's and ethminer's
// negative port (read-only API) is taken as the port.
func parseMinerArgs(api string, args []string) (minerArgs, error) {
	spec, ok := apis[api]
	if !ok {
		return minerArgs{}, fmt.Errorf("-api %q: want one of %s", api, strings.Join(apiNames(), ", "))
	}
	value := func(flag string) string {
		if flag == "" {
			return ""
		}
		for i, a := range args {
			if a == flag && i+1 < len(args) {
				return args[i+1]
			}
			if v, ok := strings.CutPrefix(a, flag+"="); ok {
				return v
			}
		}
		return ""
	}
	var m minerArgs
	m.token, m.algo = value(spec.token), value(spec.alg)
	host, port := value(spec.host), value(spec.port)
	if a := value(spec.addr); a != "" {
		h, p, err := net.SplitHostPort(a)
		if err != nil {
			return m, fmt.Errorf("%s %q: want host:port: %w", spec.addr, a, err)
		}
		host, port = h, p
	}
	port = strings.TrimPrefix(port, "-")
	if port != "" {
		if host == "" {
			host = "127.0.0.1"
		}
		m.listen = net.JoinHostPort(host, port)
	}
	return m, nil
}
