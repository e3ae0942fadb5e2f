package mining

import (
	"bufio"
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// benchReplies is one typical reply per miner.
var benchReplies = []struct{ miner, file string }{
	{"trex", "t-rex/summary_0.26.4_api4.1_5gpu_kawpow_win.json"},
	{"lolminer", "lolminer/summary_1.16a_4gpu_ethash.json"},
	{"xmrig", "xmrig/2-backends_5.5.3_cpu+cuda-gtx1050ti_win.json"},
	{"gminer", "gminer/stat_1.18_8gpu_beam_nvidia.json"},
	{"nbminer", "nbminer/api-v1-status_40.0_2gpu_ethash_lhr_OFFICIAL-README.json"},
	{"teamredminer", "teamredminer/devs_0.3.8_6gpu_cnv8.json"},
	{"rigel", "rigel/api-response_1.23.2_1gpu_xelishashv3_REWRAPPED.json"},
	{"srbminer", "srbminer/api-v2-status_SRBMiner-MULTI_3.6.4_1gpu_rtx3070_TRIMMED.json"},
	{"bzminer", "bzminer/status_9.0.0_pools-entry_ONLY.json"},
	{"claymore", "claymore-phoenix/getstat1_claymore-11.8_8gpu_eth.json"},
	{"phoenixminer", "claymore-phoenix/getstat2_phoenixminer-5.7b_4gpu_eth_18fields_COMMENTS-STRIPPED.json"},
	{"ethminer", "ethminer/getstat1_ethminer-0.19.0-beta.0+nhfix_12gpu.json"},
	{"excavator", "excavator/devices.get_2gpu_gtx1080ti+1080_OLDER-OFFICIAL-DOC.json"},
}

// BenchmarkParse parses one reply of each miner into a reused Stats. The
// allocations are the result's strings (and nothing when they are
// unchanged); ours/json-map is our parse's time over encoding/json's into
// a map[string]any of the same reply, measured in the same run.
func BenchmarkParse(b *testing.B) {
	for _, r := range benchReplies {
		b.Run(r.miner, func(b *testing.B) {
			a, err := AdapterByName(r.miner)
			if err != nil {
				b.Fatal(err)
			}
			body := readFixture(b, r.file)
			ep := a.Detect(body)
			var st Stats
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				st.Reset()
				if err := a.Parse(ep, body, &st); err != nil {
					b.Fatal(err)
				}
			}
			ours := time.Since(start)
			b.StopTimer()
			start = time.Now()
			for range b.N {
				var m any
				if err := json.Unmarshal(body, &m); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(ours)/float64(time.Since(start)), "ours/json-map")
		})
	}
}

// BenchmarkPollTick polls eight miners of eight kinds (fake miners in
// their own processes, over loopback HTTP and TCP) at once, as the Filler
// does each tick, and reports this process's CPU time per tick.
func BenchmarkPollTick(b *testing.B) {
	apis := []string{"trex", "lolminer", "xmrig", "gminer", "nbminer", "teamredminer", "rigel", "claymore"}
	var clients []*Client
	for _, api := range apis {
		addr := startFakeMiner(b, api)
		a, err := AdapterByName(api)
		if err != nil {
			b.Fatal(err)
		}
		c, err := NewClient(a, addr)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = c.Close() })
		clients = append(clients, c)
	}
	poll := func() {
		var wg sync.WaitGroup
		for _, c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := c.Poll(context.Background()); err != nil {
					b.Error(err)
				}
			}()
		}
		wg.Wait()
	}
	poll() // connections up
	user0, sys0 := cpuTime()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		poll()
	}
	b.StopTimer()
	user, sys := cpuTime()
	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(b.N) }
	b.ReportMetric(per(user-user0+sys-sys0), "cpu-µs/tick")
	b.ReportMetric(per(user-user0), "user-µs/tick")
	b.ReportMetric(per(sys-sys0), "sys-µs/tick")
}

// cpuTime is this process's user and system CPU time; the system time
// holds the kernel's loopback work for the miners' connections.
func cpuTime() (user, sys time.Duration) {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
}

// startFakeMiner runs the fake miner as api on a loopback port until b
// ends and returns its address.
func startFakeMiner(tb testing.TB, api string) string {
	tb.Helper()
	cmd := exec.Command(fakeMinerBin, "-api", api, "-gpus", "4", "-listen", "127.0.0.1:0", "-log-interval", "0")
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		tb.Fatal(err)
	}
	_, addr, ok := strings.Cut(strings.TrimSpace(line), "listening on ")
	if !ok {
		tb.Fatalf("fake miner said %q", line)
	}
	return addr
}
