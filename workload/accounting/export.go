package accounting

import (
	"encoding/csv"
	"encoding/json"
	"io"
	"iter"
	"strconv"
	"time"
)

// Columns are the CSV export's header, and the JSON export's keys.
var Columns = []string{"seq", "start", "end", "gpu", "workload", "attempt", "tenant", "kind",
	"energy_mj", "facility_energy_mj", "cost", "revenue", "flags"}

// WriteCSV writes records as CSV with a header row (Columns): times in
// RFC 3339 with nanoseconds, UTC; amounts with six decimals; flags as
// Flags.String writes them.
func WriteCSV(w io.Writer, recs iter.Seq2[Record, error]) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(Columns); err != nil {
		return err
	}
	row := make([]string, len(Columns))
	for r, err := range recs {
		if err != nil {
			return err
		}
		row[0] = strconv.FormatUint(r.Seq, 10)
		row[1] = r.Start.UTC().Format(time.RFC3339Nano)
		row[2] = r.End.UTC().Format(time.RFC3339Nano)
		row[3], row[4] = r.GPU, r.Workload
		row[5] = strconv.Itoa(r.Attempt)
		row[6], row[7] = r.Tenant, string(r.Kind)
		row[8] = strconv.FormatInt(r.EnergyMJ, 10)
		row[9] = strconv.FormatInt(r.FacilityEnergyMJ, 10)
		row[10], row[11] = r.Cost.String(), r.Revenue.String()
		row[12] = r.Flags.String()
		if err := cw.Write(row); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// jsonRecord is a record as the JSON export writes it.
type jsonRecord struct {
	Seq              uint64 `json:"seq"`
	Start            string `json:"start"`
	End              string `json:"end"`
	GPU              string `json:"gpu"`
	Workload         string `json:"workload"`
	Attempt          int    `json:"attempt"`
	Tenant           string `json:"tenant"`
	Kind             string `json:"kind"`
	EnergyMJ         int64  `json:"energy_mj"`
	FacilityEnergyMJ int64  `json:"facility_energy_mj"`
	Cost             string `json:"cost"`
	Revenue          string `json:"revenue"`
	Flags            string `json:"flags"`
}

// WriteJSON writes records as a JSON array of objects with the CSV
// export's columns as keys and the same values (amounts as decimal
// strings, so no digit is lost).
func WriteJSON(w io.Writer, recs iter.Seq2[Record, error]) error {
	if _, err := io.WriteString(w, "["); err != nil {
		return err
	}
	enc := json.NewEncoder(w)
	n := 0
	for r, err := range recs {
		if err != nil {
			return err
		}
		sep := ",\n"
		if n == 0 {
			sep = "\n"
		}
		if _, err := io.WriteString(w, sep); err != nil {
			return err
		}
		// Encode adds a newline; the array stays valid JSON.
		if err := enc.Encode(jsonRecord{Seq: r.Seq, Start: r.Start.UTC().Format(time.RFC3339Nano), End: r.End.UTC().Format(time.RFC3339Nano),
			GPU: r.GPU, Workload: r.Workload, Attempt: r.Attempt, Tenant: r.Tenant, Kind: string(r.Kind), EnergyMJ: r.EnergyMJ,
			FacilityEnergyMJ: r.FacilityEnergyMJ, Cost: r.Cost.String(), Revenue: r.Revenue.String(), Flags: r.Flags.String()}); err != nil {
			return err
		}
		n++
	}
	_, err := io.WriteString(w, "]\n")
	return err
}
