package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gpufarm/gpufarm/workload/accounting"
)

// TestPowerReportDay runs the day and checks what an operator reads: the
// ledger books every metered millijoule, renting beats mining per
// GPU-hour, the tenants' GPU-hours follow the story, and the exports are
// the ledger's records.
func TestPowerReportDay(t *testing.T) {
	dir := t.TempDir()
	csvPath, jsonPath, svgPath := filepath.Join(dir, "day.csv"), filepath.Join(dir, "day.json"), filepath.Join(dir, "day.svg")
	var out bytes.Buffer
	err := run(context.Background(), &out, []string{"-csv", csvPath, "-json", jsonPath, "-svg", svgPath})
	t.Logf("go run ./examples/powerreport\n%s", out.String())
	require.NoError(t, err)
	text := out.String()
	assert.Contains(t, text, "every millijoule accounted for")
	// acme held 4 GPUs 02:00-09:00 and 13:00-22:00, beta 6 GPUs 09:00-13:00.
	assert.Regexp(t, `(?m)^\s+acme\s+64\.00\s`, text)
	assert.Regexp(t, `(?m)^\s+beta\s+24\.00\s`, text)
	assert.Regexp(t, `(?m)^\s+mining\s+104\.00\s`, text)
	assert.Regexp(t, `(?m)^\s+total\s+192\.00\s`, text, "8 GPUs for 24 hours")
	assert.Contains(t, text, "margin per GPU-hour: renting")

	f, err := os.Open(csvPath)
	require.NoError(t, err)
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	require.NoError(t, err)
	require.Equal(t, accounting.Columns, rows[0])
	var energy int64
	for _, r := range rows[1:] {
		mj, err := strconv.ParseInt(r[8], 10, 64)
		require.NoError(t, err)
		energy += mj
	}
	assert.Contains(t, text, "energy booked in the ledger "+strconv.FormatInt(energy, 10)+" mJ", "the CSV holds the day's records")
	assert.GreaterOrEqual(t, len(rows)-1, 8*24*60, "a record per GPU and minute at least")

	var js []map[string]any
	b, err := os.ReadFile(jsonPath)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &js))
	assert.Len(t, js, len(rows)-1)

	svg, err := os.ReadFile(svgPath)
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(string(svg), "<?xml"), "an SVG picture")
	for _, title := range []string{"GPU power by kind", "tariff", "margin per GPU-hour"} {
		assert.Contains(t, string(svg), title)
	}
}

func TestPowerReportBadFlags(t *testing.T) {
	var out bytes.Buffer
	assert.Error(t, run(context.Background(), &out, []string{"-pue", "0.5"}))
	assert.Error(t, run(context.Background(), &out, []string{"-bogus"}))
	assert.NoError(t, run(context.Background(), &out, []string{"-h"}))
}
