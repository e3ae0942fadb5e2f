package accounting

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Tariff prices energy over time, per kWh in the operator's currency.
// Implementations must be safe for concurrent use.
type Tariff interface {
	// PriceAt returns the price per kWh in force at t and the time until
	// which it holds (exclusive); a zero until means for ever. A time
	// without a price fails with ErrNoPrice.
	PriceAt(t time.Time) (perKWh float64, until time.Time, err error)
}

// mJPerKWh is 3.6 MJ in millijoules.
const mJPerKWh = 3.6e9

// Cost prices energyMJ drawn evenly over [from, to) with t, split at
// every change of price inside. It returns the cost of the part that has
// a price, and ErrNoPrice (naming the first unpriced time) when some part
// has none.
func Cost(t Tariff, from, to time.Time, energyMJ int64) (float64, error) {
	if t == nil {
		return 0, Errorf(ErrNoPrice, "no tariff: give the meter one with WithTariff")
	}
	if !to.After(from) {
		return 0, nil
	}
	total := float64(to.Sub(from))
	cost := 0.0
	var missing error
	for at := from; at.Before(to); {
		price, until, err := t.PriceAt(at)
		if err != nil {
			if missing == nil {
				missing = err
			}
			// Skip ahead to where a price may start again: the next
			// minute, so a series that resumes is picked up.
			until = at.Truncate(time.Minute).Add(time.Minute)
			price = math.NaN()
		}
		end := to
		if !until.IsZero() && until.Before(to) {
			end = until
		}
		if !end.After(at) {
			return cost, Errorf(ErrInvalid, "tariff gave a price at %s that ends at %s, not after it", at.Format(time.RFC3339), until.Format(time.RFC3339))
		}
		if !math.IsNaN(price) {
			cost += float64(energyMJ) * (float64(end.Sub(at)) / total) / mJPerKWh * price
		}
		at = end
	}
	return cost, missing
}

// Flat is one price per kWh at all times.
type Flat float64

// PriceAt returns the flat price, for ever.
func (f Flat) PriceAt(time.Time) (float64, time.Time, error) { return float64(f), time.Time{}, nil }

// Days is a set of days for a time-of-use band.
type Days uint8

const (
	Monday Days = 1 << iota
	Tuesday
	Wednesday
	Thursday
	Friday
	Saturday
	Sunday
	// Holidays are the dates given to NewTimeOfUse: on them only bands
	// with Holidays apply, whatever the weekday.
	Holidays

	Weekdays = Monday | Tuesday | Wednesday | Thursday | Friday
	Weekend  = Saturday | Sunday
	EveryDay = Weekdays | Weekend | Holidays
)

var dayNames = [...]string{"Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday", "holidays"}

func dayOf(w time.Weekday) Days {
	if w == time.Sunday {
		return Sunday
	}
	return Monday << (w - time.Monday)
}

// Band is one price for some hours of some days, in the tariff's time
// zone: from Start to End after local midnight (End up to 24h).
type Band struct {
	Name       string
	Days       Days
	Start, End time.Duration
	PerKWh     float64
}

// TimeOfUse prices by weekday and hour bands in one time zone, with
// holidays as dates. Every hour of every kind of day has exactly one band.
type TimeOfUse struct {
	loc      *time.Location
	byDay    [8][]Band // Monday..Sunday, holidays; sorted by Start
	holidays map[[3]int]bool
}

// NewTimeOfUse checks that the bands cover every minute of every weekday,
// and of holidays when any are given, exactly once, and reports every
// overlap and every hole at once (ErrInvalid). Holidays are dates in the
// form 2006-01-02, in loc.
func NewTimeOfUse(loc *time.Location, bands []Band, holidays ...string) (*TimeOfUse, error) {
	var errs []error
	if loc == nil {
		errs = append(errs, errors.New("no time zone: pass time.UTC or a time.LoadLocation result"))
	}
	t := &TimeOfUse{loc: loc, holidays: map[[3]int]bool{}}
	for _, h := range holidays {
		d, err := time.Parse(time.DateOnly, h)
		if err != nil {
			errs = append(errs, fmt.Errorf("holiday %q: want a date like 2026-12-25", h))
			continue
		}
		t.holidays[[3]int{d.Year(), int(d.Month()), d.Day()}] = true
	}
	for i, b := range bands {
		name := bandName(i, b)
		if b.Start < 0 || b.End > 24*time.Hour || b.End <= b.Start {
			errs = append(errs, fmt.Errorf("%s: %v to %v: want 0 <= start < end <= 24h", name, b.Start, b.End))
			continue
		}
		if b.Days == 0 || b.Days&^EveryDay != 0 {
			errs = append(errs, fmt.Errorf("%s: no days, or unknown ones", name))
			continue
		}
		if b.PerKWh < 0 || math.IsNaN(b.PerKWh) || math.IsInf(b.PerKWh, 0) {
			errs = append(errs, fmt.Errorf("%s: price %v per kWh: want 0 or more", name, b.PerKWh))
		}
		for d := range t.byDay {
			if b.Days&(1<<d) != 0 {
				t.byDay[d] = append(t.byDay[d], b)
			}
		}
	}
	for d, bs := range t.byDay {
		if d == 7 && len(t.holidays) == 0 && len(bs) == 0 {
			continue // no holidays, no holiday bands needed
		}
		slices.SortFunc(bs, func(a, b Band) int { return int(a.Start - b.Start) })
		at := time.Duration(0)
		for i, b := range bs {
			switch {
			case b.Start > at:
				errs = append(errs, fmt.Errorf("%s: no band from %s to %s", dayNames[d], hhmm(at), hhmm(b.Start)))
			case b.Start < at:
				errs = append(errs, fmt.Errorf("%s: %q and %q overlap from %s to %s", dayNames[d], bs[i-1].Name, b.Name, hhmm(b.Start), hhmm(min(at, b.End))))
			}
			at = max(at, b.End)
		}
		if at < 24*time.Hour {
			errs = append(errs, fmt.Errorf("%s: no band from %s to 24:00", dayNames[d], hhmm(at)))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, Errorf(ErrInvalid, "time-of-use tariff: %w", err)
	}
	return t, nil
}

func bandName(i int, b Band) string {
	if b.Name != "" {
		return fmt.Sprintf("band %d (%s)", i, b.Name)
	}
	return fmt.Sprintf("band %d", i)
}

func hhmm(d time.Duration) string {
	return fmt.Sprintf("%02d:%02d", int(d/time.Hour), int(d%time.Hour/time.Minute))
}

// PriceAt returns the band's price at t and the local time its band ends.
func (t *TimeOfUse) PriceAt(at time.Time) (float64, time.Time, error) {
	lt := at.In(t.loc)
	y, mo, d := lt.Date()
	day := 7
	if !t.holidays[[3]int{y, int(mo), d}] {
		day = bits.TrailingZeros8(uint8(dayOf(lt.Weekday())))
	}
	h, mi, s := lt.Clock()
	off := time.Duration(h)*time.Hour + time.Duration(mi)*time.Minute + time.Duration(s)*time.Second + time.Duration(lt.Nanosecond())
	bs := t.byDay[day]
	i, _ := slices.BinarySearchFunc(bs, off, func(b Band, off time.Duration) int {
		switch {
		case b.End <= off:
			return -1
		case b.Start > off:
			return 1
		}
		return 0
	})
	if i >= len(bs) {
		return 0, time.Time{}, Errorf(ErrNoPrice, "time-of-use tariff has no band at %s", lt.Format(time.RFC3339))
	}
	b := bs[i]
	until := time.Date(y, mo, d, int(b.End/time.Hour), int(b.End%time.Hour/time.Minute), 0, 0, t.loc)
	// Around a daylight-saving change a wall time can come twice or not at
	// all: the end is never before the time asked about.
	for !until.After(at) {
		until = until.Add(time.Hour)
	}
	return b.PerKWh, until, nil
}

// PricePoint is one price of a price series, for [Start, End).
type PricePoint struct {
	Start, End time.Time
	PerKWh     float64
}

// PriceSeries is a real-time price series, such as a market's 15-minute
// prices: consecutive intervals without holes or overlaps.
type PriceSeries struct {
	points []PricePoint
}

// NewPriceSeries sorts the points by start and checks that each ends
// where the next begins, reporting every hole and overlap at once
// (ErrInvalid).
func NewPriceSeries(points []PricePoint) (*PriceSeries, error) {
	ps := slices.Clone(points)
	slices.SortFunc(ps, func(a, b PricePoint) int { return a.Start.Compare(b.Start) })
	var errs []error
	if len(ps) == 0 {
		errs = append(errs, errors.New("no prices"))
	}
	for i, p := range ps {
		if !p.End.After(p.Start) {
			errs = append(errs, fmt.Errorf("price from %s ends at %s, not after it", p.Start.Format(time.RFC3339), p.End.Format(time.RFC3339)))
		}
		if math.IsNaN(p.PerKWh) || math.IsInf(p.PerKWh, 0) {
			errs = append(errs, fmt.Errorf("price from %s is %v", p.Start.Format(time.RFC3339), p.PerKWh))
		}
		if i == 0 {
			continue
		}
		prev := ps[i-1]
		switch {
		case p.Start.After(prev.End):
			errs = append(errs, fmt.Errorf("hole: no price from %s to %s", prev.End.Format(time.RFC3339), p.Start.Format(time.RFC3339)))
		case p.Start.Before(prev.End):
			errs = append(errs, fmt.Errorf("overlap: prices from %s and from %s both cover %s", prev.Start.Format(time.RFC3339), p.Start.Format(time.RFC3339), p.Start.Format(time.RFC3339)))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, Errorf(ErrInvalid, "price series: %w", err)
	}
	return &PriceSeries{points: ps}, nil
}

// Span returns the first start and the last end of the series.
func (s *PriceSeries) Span() (from, to time.Time) {
	return s.points[0].Start, s.points[len(s.points)-1].End
}

// PriceAt returns the price of the interval holding t; outside the series
// it fails with ErrNoPrice.
func (s *PriceSeries) PriceAt(t time.Time) (float64, time.Time, error) {
	i, _ := slices.BinarySearchFunc(s.points, t, func(p PricePoint, t time.Time) int {
		switch {
		case !p.End.After(t):
			return -1
		case p.Start.After(t):
			return 1
		}
		return 0
	})
	if i >= len(s.points) || s.points[i].Start.After(t) {
		from, to := s.Span()
		return 0, time.Time{}, Errorf(ErrNoPrice, "price series has no price at %s (it covers %s to %s): add prices for that time",
			t.Format(time.RFC3339), from.Format(time.RFC3339), to.Format(time.RFC3339))
	}
	return s.points[i].PerKWh, s.points[i].End, nil
}

// ReadPriceCSV reads a price series from CSV with a header row: a start
// column (RFC 3339 times), an optional end column, and the price as
// price_per_kwh or price_per_mwh (market prices, divided by 1000). Without
// an end column each price holds for step. Bad lines are all reported,
// with their line numbers; holes and overlaps as NewPriceSeries does.
func ReadPriceCSV(r io.Reader, step time.Duration) (*PriceSeries, error) {
	cr := csv.NewReader(r)
	cr.TrimLeadingSpace = true
	cr.FieldsPerRecord = -1
	head, err := cr.Read()
	if err != nil {
		return nil, Errorf(ErrInvalid, "price CSV: read the header: %w", err)
	}
	col := map[string]int{}
	for i, h := range head {
		col[strings.ToLower(strings.TrimSpace(h))] = i
	}
	startCol, okStart := col["start"]
	endCol, hasEnd := col["end"]
	priceCol, perMWh := col["price_per_kwh"], false
	if _, ok := col["price_per_kwh"]; !ok {
		priceCol, perMWh = col["price_per_mwh"], true
		if _, ok := col["price_per_mwh"]; !ok {
			okStart = false
		}
	}
	if !okStart {
		return nil, Errorf(ErrInvalid, "price CSV: header %q: want columns start, [end,] and price_per_kwh or price_per_mwh", strings.Join(head, ","))
	}
	if !hasEnd && step <= 0 {
		return nil, Errorf(ErrInvalid, "price CSV has no end column: give the step each price holds for (e.g. 15m)")
	}
	var pts []PricePoint
	var errs []error
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		line, _ := cr.FieldPos(0)
		if err != nil {
			errs = append(errs, fmt.Errorf("line %d: %w", line, err))
			continue
		}
		field := func(i int) string {
			if i < len(rec) {
				return strings.TrimSpace(rec[i])
			}
			return ""
		}
		var p PricePoint
		var bad []string
		if p.Start, err = time.Parse(time.RFC3339, field(startCol)); err != nil {
			bad = append(bad, fmt.Sprintf("start %q is not an RFC 3339 time", field(startCol)))
		}
		if hasEnd {
			if p.End, err = time.Parse(time.RFC3339, field(endCol)); err != nil {
				bad = append(bad, fmt.Sprintf("end %q is not an RFC 3339 time", field(endCol)))
			}
		} else {
			p.End = p.Start.Add(step)
		}
		if p.PerKWh, err = strconv.ParseFloat(field(priceCol), 64); err != nil {
			bad = append(bad, fmt.Sprintf("price %q is not a number", field(priceCol)))
		}
		if perMWh {
			p.PerKWh /= 1000
		}
		if len(bad) > 0 {
			errs = append(errs, fmt.Errorf("line %d: %s", line, strings.Join(bad, "; ")))
			continue
		}
		pts = append(pts, p)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, Errorf(ErrInvalid, "price CSV: %w", err)
	}
	return NewPriceSeries(pts)
}
