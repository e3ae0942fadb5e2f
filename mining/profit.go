package mining

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gpufarm/gpufarm/gpu"
)

// Coin is the economics of one coin, as a CoinSource reports them.
type Coin struct {
	Name string // "Ethereum"
	Tag  string // ticker, "ETH"
	// Algorithm as the source names it: "Ethash", "SHA-256", "KawPow".
	Algorithm   string
	BlockReward float64 // coins per block
	// Difficulty is the network difficulty, in the coin's own definition:
	// hashes per block for most GPU coins, in units of 2^32 hashes for
	// SHA-256 and Scrypt coins (see HashesPerDifficulty).
	Difficulty float64
	BlockTimeS gpu.Optional[float64]
	// PriceBTC is the price of one coin in BTC (1 for Bitcoin).
	PriceBTC float64
	// Lagging: the source's data for the coin is stale; it is not mined.
	Lagging bool
	// Marketplace: not a coin but a hashrate marketplace (WhatToMine's
	// "Nicehash-*" entries), whose numbers the revenue formula does not
	// apply to; it is not mined.
	Marketplace bool
	Time        time.Time // when the source took the numbers
}

// Market is what a CoinSource knows at one time.
type Market struct {
	Coins []Coin
	// BTCPrice is one BTC in the operator's currency when the source knows
	// it (WhatToMine's asic.json prices Bitcoin in USD); an operator's
	// WithBTCPrice takes precedence.
	BTCPrice gpu.Optional[float64]
	At       time.Time
}

// Coin returns the coin with that tag, ignoring case.
func (m Market) Coin(tag string) (Coin, bool) {
	for _, c := range m.Coins {
		if strings.EqualFold(c.Tag, tag) && !c.Marketplace {
			return c, true
		}
	}
	return Coin{}, false
}

// CoinSource supplies coin economics. Implementations are safe for
// concurrent use.
type CoinSource interface {
	Market(ctx context.Context) (Market, error)
}

// HashesPerDifficulty is how many hashes one unit of difficulty stands for:
// 2^32 for SHA-256 and Scrypt coins (Bitcoin's definition), 1 for the
// others, whose difficulty is the expected hashes per block.
func HashesPerDifficulty(algorithm string) float64 {
	switch strings.ToLower(strings.ReplaceAll(algorithm, "-", "")) {
	case "sha256", "sha256d", "scrypt":
		return 1 << 32
	}
	return 1
}

// CoinsPerDay is what rate (in the algorithm's unit, H/s or Sol/s) earns
// of coin c in a day: rate x 86400 x block reward / (difficulty x hashes
// per difficulty).
func (c Coin) CoinsPerDay(rate float64) float64 {
	if c.Difficulty <= 0 || rate <= 0 {
		return 0
	}
	return rate * 86400 * c.BlockReward / (c.Difficulty * HashesPerDifficulty(c.Algorithm))
}

// RevenuePerDay is what rate earns of coin c in a day, in BTC, less the
// pool fee (a fraction: 0.01 is 1 %).
func (c Coin) RevenuePerDay(rate, poolFee float64) float64 {
	return c.CoinsPerDay(rate) * c.PriceBTC * (1 - poolFee)
}

// flexNum is a number WhatToMine sends as a number or a string
// ("13.2861"); empty strings are absent.
type flexNum struct {
	v     float64
	valid bool
}

func (f *flexNum) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		s = strings.TrimSpace(s)
		if s == "" {
			return nil
		}
		b = []byte(s)
	}
	v, err := strconv.ParseFloat(string(b), 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return fmt.Errorf("%q is not a non-negative number", b)
	}
	f.v, f.valid = v, true
	return nil
}

type wtmCoin struct {
	Name             string  `json:"name"`
	Tag              string  `json:"tag"`
	Algorithm        string  `json:"algorithm"`
	BlockTime        flexNum `json:"block_time"`
	BlockReward      flexNum `json:"block_reward"`
	Difficulty       flexNum `json:"difficulty"`
	ExchangeRate     flexNum `json:"exchange_rate"`
	ExchangeRateCurr string  `json:"exchange_rate_curr"`
	Lagging          bool    `json:"lagging"`
	Timestamp        int64   `json:"timestamp"`
}

// ParseWhatToMine reads WhatToMine's JSON: coins.json or asic.json
// ({"coins": {...}}) or one coin (coins/<id>.json). A reply it cannot read
// is an ErrMalformed.
func ParseWhatToMine(body []byte) (Market, error) {
	var m Market
	var doc struct {
		Coins map[string]wtmCoin `json:"coins"`
	}
	body = bytes.TrimSpace(body)
	if !bytes.HasPrefix(body, []byte("{")) {
		return m, fmt.Errorf("%w: WhatToMine: want a JSON object (coins.json, asic.json or coins/<id>.json)", ErrMalformed)
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return m, fmt.Errorf("%w: WhatToMine: %v", ErrMalformed, err)
	}
	if doc.Coins == nil { // one coin, coins/<id>.json
		var c wtmCoin
		if err := json.Unmarshal(body, &c); err != nil {
			return m, fmt.Errorf("%w: WhatToMine: %v", ErrMalformed, err)
		}
		if c.Tag == "" {
			return m, fmt.Errorf("%w: WhatToMine: no coins and no coin tag", ErrMalformed)
		}
		doc.Coins = map[string]wtmCoin{c.Name: c}
	}
	for name, w := range doc.Coins {
		if w.Name != "" {
			name = w.Name
		}
		c := Coin{
			Name: name, Tag: w.Tag, Algorithm: w.Algorithm, BlockReward: w.BlockReward.v, Difficulty: w.Difficulty.v,
			PriceBTC: w.ExchangeRate.v, Lagging: w.Lagging, Marketplace: strings.EqualFold(w.Tag, "NICEHASH"),
		}
		if w.BlockTime.valid {
			c.BlockTimeS = gpu.Some(w.BlockTime.v)
		}
		if w.Timestamp > 0 {
			c.Time = time.Unix(w.Timestamp, 0).UTC()
			if c.Time.After(m.At) {
				m.At = c.Time
			}
		}
		if strings.EqualFold(w.Tag, "BTC") {
			// WhatToMine prices Bitcoin itself in USD.
			if w.ExchangeRate.valid && w.ExchangeRate.v > 0 {
				m.BTCPrice = gpu.Some(w.ExchangeRate.v)
			}
			c.PriceBTC = 1
		}
		m.Coins = append(m.Coins, c)
	}
	slices.SortFunc(m.Coins, func(a, b Coin) int { return strings.Compare(a.Name, b.Name) })
	return m, nil
}

// WhatToMine is a CoinSource over WhatToMine's JSON, read from a file or
// fetched from a URL, and kept for a refresh interval. Its methods are
// safe for concurrent use.
type WhatToMine struct {
	file, url string
	refresh   time.Duration
	clock     gpu.Clock
	http      *http.Client

	mu     sync.Mutex
	market Market
	read   time.Time
}

// WhatToMineOption configures a WhatToMine source.
type WhatToMineOption func(*WhatToMine) error

// WithRefresh sets how long a fetched market is kept (default 10 min:
// WhatToMine limits its API).
func WithRefresh(d time.Duration) WhatToMineOption {
	return func(w *WhatToMine) error {
		if d <= 0 {
			return fmt.Errorf("WithRefresh(%v): want a positive interval", d)
		}
		w.refresh = d
		return nil
	}
}

// WithWhatToMineClock sets the clock of the refresh (default the system
// clock).
func WithWhatToMineClock(c gpu.Clock) WhatToMineOption {
	return func(w *WhatToMine) error {
		if c == nil {
			return errors.New("WithWhatToMineClock: nil clock")
		}
		w.clock = c
		return nil
	}
}

// NewWhatToMine returns a source that reads source: a file path, or an
// http(s) URL such as https://whattomine.com/coins.json (plus the
// calculator's query for the operator's hashrates, if wanted).
func NewWhatToMine(source string, opts ...WhatToMineOption) (*WhatToMine, error) {
	w := &WhatToMine{refresh: 10 * time.Minute, clock: gpu.SystemClock{}, http: &http.Client{Timeout: 30 * time.Second}}
	switch {
	case strings.HasPrefix(source, "https://") || strings.HasPrefix(source, "http://"):
		w.url = source
	case source != "" && !strings.ContainsAny(source, "\n\x00"):
		w.file = source
	default:
		return nil, fmt.Errorf("%w: NewWhatToMine: source %q: want a file path or an http(s) URL", ErrInvalid, source)
	}
	var errs []error
	for _, o := range opts {
		if err := o(w); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: NewWhatToMine: %w", ErrInvalid, errors.Join(errs...))
	}
	return w, nil
}

// Market returns the coins, read again once the refresh interval has
// passed. A failed read returns the error and keeps the last market.
func (w *WhatToMine) Market(ctx context.Context) (Market, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.clock.Now()
	if !w.read.IsZero() && now.Sub(w.read) < w.refresh {
		return w.market, nil
	}
	body, err := w.fetch(ctx)
	if err != nil {
		return w.market, err
	}
	m, err := ParseWhatToMine(body)
	if err != nil {
		return w.market, err
	}
	w.market, w.read = m, now
	return m, nil
}

func (w *WhatToMine) fetch(ctx context.Context) ([]byte, error) {
	var r io.Reader
	if w.file != "" {
		f, err := os.Open(w.file)
		if err != nil {
			return nil, fmt.Errorf("%w: WhatToMine file: %v", ErrUnavailable, err)
		}
		defer f.Close()
		r = f
	} else {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.url, nil)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		resp, err := w.http.Do(req)
		if err != nil {
			return nil, fmt.Errorf("%w: WhatToMine: %v", ErrUnavailable, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("%w: WhatToMine: HTTP %s (429 is its rate limit: refresh less often)", ErrRefused, resp.Status)
		}
		r = resp.Body
	}
	body, err := io.ReadAll(io.LimitReader(r, 16<<20+1))
	if err != nil {
		return nil, fmt.Errorf("%w: WhatToMine: %v", ErrUnavailable, err)
	}
	if len(body) > 16<<20 {
		return nil, fmt.Errorf("%w: WhatToMine: reply larger than 16 MiB", ErrMalformed)
	}
	return body, nil
}

// StaticMarket is a CoinSource that always returns m: for tests, and for
// operators who price coins themselves.
type StaticMarket Market

// Market returns the market.
func (s StaticMarket) Market(context.Context) (Market, error) { return Market(s), nil }
