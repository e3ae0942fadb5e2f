package bolt

import (
	"encoding/binary"
	"errors"
	"time"

	"github.com/gpufarm/gpufarm/workload"
	"github.com/gpufarm/gpufarm/workload/accounting"
)

// codecVersion leads every stored record.
const codecVersion = 1

// encode appends r in the ledger's binary form: a version byte, then the
// fields as varints and length-prefixed strings, times as Unix
// nanoseconds.
func encode(buf []byte, r *accounting.Record) []byte {
	buf = append(buf, codecVersion)
	buf = binary.AppendUvarint(buf, r.Seq)
	buf = binary.AppendVarint(buf, r.Start.UnixNano())
	buf = binary.AppendVarint(buf, r.End.UnixNano())
	for _, s := range []string{r.GPU, r.Workload, r.Tenant, string(r.Kind)} {
		buf = binary.AppendUvarint(buf, uint64(len(s)))
		buf = append(buf, s...)
	}
	buf = binary.AppendVarint(buf, int64(r.Attempt))
	buf = binary.AppendVarint(buf, r.EnergyMJ)
	buf = binary.AppendVarint(buf, r.FacilityEnergyMJ)
	buf = binary.AppendUvarint(buf, r.EndCounterMJ)
	buf = binary.AppendVarint(buf, int64(r.Cost))
	buf = binary.AppendVarint(buf, int64(r.Revenue))
	return binary.AppendUvarint(buf, uint64(r.Flags))
}

var errCorrupt = errors.New("malformed record")

// decode reads what encode wrote.
func decode(b []byte) (accounting.Record, error) {
	var r accounting.Record
	if len(b) == 0 || b[0] != codecVersion {
		return r, errCorrupt
	}
	b = b[1:]
	bad := false
	uv := func() uint64 {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			bad = true
			return 0
		}
		b = b[n:]
		return v
	}
	sv := func() int64 {
		v, n := binary.Varint(b)
		if n <= 0 {
			bad = true
			return 0
		}
		b = b[n:]
		return v
	}
	str := func() string {
		n := uv()
		if bad || n > uint64(len(b)) {
			bad = true
			return ""
		}
		s := string(b[:n])
		b = b[n:]
		return s
	}
	r.Seq = uv()
	r.Start = time.Unix(0, sv()).UTC()
	r.End = time.Unix(0, sv()).UTC()
	r.GPU, r.Workload, r.Tenant, r.Kind = str(), str(), str(), workload.Kind(str())
	r.Attempt = int(sv())
	r.EnergyMJ, r.FacilityEnergyMJ = sv(), sv()
	r.EndCounterMJ = uv()
	r.Cost, r.Revenue = accounting.Amount(sv()), accounting.Amount(sv())
	r.Flags = accounting.Flags(uv())
	if bad || len(b) != 0 {
		return accounting.Record{}, errCorrupt
	}
	return r, nil
}
