package mining

import (
	"bytes"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/gpufarm/gpufarm/gpu"
)

// scanner is a pull parser over one JSON document. The adapters walk a
// reply with it and keep only the fields they need, so parsing allocates
// nothing but the strings of the result. It takes numbers whether they
// arrive as numbers or as strings, refuses NaN and infinities, and stops
// at the first error, which it keeps: once err is set every read returns
// a zero value and every loop ends, so parsers check err once at the end.
type scanner struct {
	b   []byte
	i   int
	err error
}

func newScanner(b []byte) *scanner {
	// A UTF-8 byte order mark, which some Windows builds send.
	b = bytes.TrimPrefix(b, []byte("\xef\xbb\xbf"))
	return &scanner{b: b}
}

// fail records the first error, which says where the reply went wrong.
func (s *scanner) fail(format string, args ...any) {
	if s.err == nil {
		s.err = fmt.Errorf("%w: %s at byte %d", ErrMalformed, fmt.Sprintf(format, args...), s.i)
	}
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek returns the next significant byte, 0 at the end or after an error.
func (s *scanner) peek() byte {
	if s.err != nil {
		return 0
	}
	s.ws()
	if s.i >= len(s.b) {
		return 0
	}
	return s.b[s.i]
}

// end checks that nothing but white space (and the NUL byte the sgminer
// family appends) follows the document.
func (s *scanner) end() error {
	if s.err != nil {
		return s.err
	}
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r', 0:
			s.i++
		default:
			s.fail("unexpected %q after the reply", s.b[s.i])
			return s.err
		}
	}
	return nil
}

// finish checks the end of the document and that it was the reply
// expected: seen says a member only that reply has was read; what names
// the reply and what it lacked, for the error.
func (s *scanner) finish(seen bool, what string) error {
	if err := s.end(); err != nil {
		return err
	}
	if !seen {
		return fmt.Errorf("%w: not %s", ErrMalformed, what)
	}
	return nil
}

// iter walks the members of an object or the elements of an array.
type iter struct {
	s     *scanner
	close byte
	first bool
	done  bool
}

// object opens an object. A null is an empty object; anything else that
// is not an object fails the scan.
func (s *scanner) object() iter { return s.open('{', '}', "an object") }

// array opens an array; a null is an empty array.
func (s *scanner) array() iter { return s.open('[', ']', "an array") }

func (s *scanner) open(open, close byte, what string) iter {
	it := iter{s: s, close: close, first: true}
	switch c := s.peek(); c {
	case open:
		s.i++
	case 'n':
		s.literal("null")
		it.done = true
	case 0:
		if s.err == nil {
			s.fail("unexpected end of reply, want %s", what)
		}
		it.done = true
	default:
		s.fail("want %s, found %q", what, c)
		it.done = true
	}
	return it
}

// next reports whether another member or element follows, consuming the
// comma before it or the closing bracket after the last.
func (it *iter) next() bool {
	s := it.s
	if it.done || s.err != nil {
		return false
	}
	c := s.peek()
	if c == it.close {
		s.i++
		it.done = true
		return false
	}
	if !it.first {
		if c != ',' {
			if c == 0 {
				s.fail("unexpected end of reply")
			} else {
				s.fail("want ',' or %q, found %q", it.close, c)
			}
			return false
		}
		s.i++
	}
	it.first = false
	if s.peek() == 0 {
		s.fail("unexpected end of reply")
		return false
	}
	return true
}

// key reads the next member's name and the colon after it. The bytes are
// valid until the next read.
func (it *iter) key() []byte {
	s := it.s
	if s.peek() != '"' {
		s.fail("want a member name")
		return nil
	}
	k := s.str()
	if s.peek() != ':' {
		s.fail("want ':' after member %q", k)
		return nil
	}
	s.i++
	return k
}

// literal consumes true, false or null.
func (s *scanner) literal(word string) {
	if len(s.b)-s.i >= len(word) && string(s.b[s.i:s.i+len(word)]) == word {
		s.i += len(word)
		return
	}
	s.fail("want %s", word)
}

// str reads a string and returns its content, unescaped. Without escapes
// it is a slice of the reply; with escapes a new slice.
func (s *scanner) str() []byte {
	if s.peek() != '"' {
		s.fail("want a string")
		return nil
	}
	s.i++
	start, escaped := s.i, false
	for s.i < len(s.b) {
		switch c := s.b[s.i]; {
		case c == '"':
			raw := s.b[start:s.i]
			s.i++
			if escaped {
				return s.unescape(raw)
			}
			return raw
		case c == '\\':
			escaped = true
			s.i += 2
		case c < 0x20:
			s.fail("control character in a string")
			return nil
		default:
			s.i++
		}
	}
	s.fail("unterminated string")
	return nil
}

func (s *scanner) unescape(raw []byte) []byte {
	out := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		i++
		if i >= len(raw) {
			s.fail("bad escape")
			return nil
		}
		switch raw[i] {
		case '"', '\\', '/':
			out = append(out, raw[i])
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			if i+4 >= len(raw) {
				s.fail("bad \\u escape")
				return nil
			}
			v, err := strconv.ParseUint(string(raw[i+1:i+5]), 16, 16)
			if err != nil {
				s.fail("bad \\u escape")
				return nil
			}
			out = utf8.AppendRune(out, rune(v))
			i += 4
		default:
			s.fail("bad escape \\%c", raw[i])
			return nil
		}
	}
	return out
}

// text reads a string, or the literal text of a number, as bytes; null
// and the empty string give nil. Objects, arrays and booleans fail.
func (s *scanner) text() []byte {
	switch c := s.peek(); {
	case c == '"':
		return s.str()
	case c == 'n':
		s.literal("null")
		return nil
	case c == '-' || (c >= '0' && c <= '9'):
		return s.number()
	default:
		if s.err == nil {
			s.fail("want a string")
		}
		return nil
	}
}

// number consumes the text of a JSON number.
func (s *scanner) number() []byte {
	start := s.i
	for s.i < len(s.b) {
		c := s.b[s.i]
		if (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E' {
			s.i++
			continue
		}
		break
	}
	return s.b[start:s.i]
}

// num reads a number that may arrive as a number, as a string ("61.5",
// " 12 "), or as null, an empty or blank string, "-", "n/a" or "off" for
// "not reported". NaN, infinities and anything else fail the scan.
func (s *scanner) num() (float64, bool) {
	var raw []byte
	switch c := s.peek(); {
	case c == '"':
		raw = bytes.TrimSpace(s.str())
		switch string(raw) {
		case "", "-", "n/a", "N/A", "off", "null":
			return 0, false
		}
	case c == 'n':
		s.literal("null")
		return 0, false
	case c == '-' || (c >= '0' && c <= '9'):
		raw = s.number()
	default:
		if s.err == nil {
			s.fail("want a number, found %q", c)
		}
		return 0, false
	}
	return s.parseFloat(raw)
}

func (s *scanner) parseFloat(raw []byte) (float64, bool) {
	if s.err != nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		s.fail("want a finite number, found %q", raw)
		return 0, false
	}
	return v, true
}

// The readers below name what a value means and apply its rule.

// rate reads a hash rate scaled by factor: a negative rate fails the scan.
func (s *scanner) rate(factor float64) gpu.Optional[float64] {
	v, ok := s.num()
	if !ok {
		return gpu.Optional[float64]{}
	}
	if v < 0 {
		s.fail("negative rate %g", v)
		return gpu.Optional[float64]{}
	}
	return gpu.Some(v * factor)
}

// siRate reads a rate that may be a number or a display string with an SI
// suffix ("61.50 M", "4.29 G", "0.000 ").
func (s *scanner) siRate() gpu.Optional[float64] {
	if s.peek() != '"' {
		return s.rate(1)
	}
	t := bytes.TrimSpace(s.str())
	if len(t) == 0 {
		return gpu.Optional[float64]{}
	}
	factor := 1.0
	if c := t[len(t)-1]; c < '0' || c > '9' {
		f, ok := siFactor(string(c))
		if !ok {
			s.fail("want a rate with an SI suffix, found %q", t)
			return gpu.Optional[float64]{}
		}
		factor, t = f, bytes.TrimSpace(t[:len(t)-1])
	}
	v, ok := s.parseFloat(t)
	if !ok || v < 0 {
		s.fail("want a rate, found %q", t)
		return gpu.Optional[float64]{}
	}
	return gpu.Some(v * factor)
}

// count reads a share count or any other counter: a negative or fractional
// count fails the scan.
func (s *scanner) count() gpu.Optional[int64] {
	v, ok := s.num()
	if !ok {
		return gpu.Optional[int64]{}
	}
	if v < 0 || v != math.Trunc(v) || v > 1<<53 {
		s.fail("want a count, found %g", v)
		return gpu.Optional[int64]{}
	}
	return gpu.Some(int64(v))
}

// seconds reads a duration in seconds (scaled by factor: 60 for minutes);
// negative fails the scan.
func (s *scanner) seconds(factor float64) gpu.Optional[time.Duration] {
	v, ok := s.num()
	if !ok {
		return gpu.Optional[time.Duration]{}
	}
	if v < 0 || v*factor > float64(math.MaxInt64/int64(time.Second)) {
		s.fail("want a duration in seconds, found %g", v)
		return gpu.Optional[time.Duration]{}
	}
	return gpu.Some(time.Duration(v * factor * float64(time.Second)))
}

// sensor reads a sensor value (power, temperature, fan). Miners report a
// missing sensor as 0 or as a negative number (NBMiner memTemperature -1,
// Excavator fan rpm -1), so those read as absent.
func (s *scanner) sensor() gpu.Optional[float64] {
	v, ok := s.num()
	if !ok || v <= 0 {
		return gpu.Optional[float64]{}
	}
	return gpu.Some(v)
}

// integer reads a small non-negative integer such as an index or a bus
// number; -1 if absent.
func (s *scanner) integer() int {
	v, ok := s.num()
	if !ok {
		return -1
	}
	if v < 0 || v != math.Trunc(v) || v > math.MaxInt32 {
		s.fail("want a non-negative integer, found %g", v)
		return -1
	}
	return int(v)
}

// boolean reads true or false (also 1/0 and "true"/"false"); null is
// false.
func (s *scanner) boolean() bool {
	switch c := s.peek(); c {
	case 't':
		s.literal("true")
		return true
	case 'f':
		s.literal("false")
		return false
	case 'n':
		s.literal("null")
		return false
	default:
		t := s.text()
		return string(t) == "1" || string(t) == "true"
	}
}

// skip consumes one value of any kind, without recursion.
func (s *scanner) skip() {
	depth := 0
	for s.err == nil {
		switch c := s.peek(); {
		case c == 0:
			s.fail("unexpected end of reply")
			return
		case c == '{' || c == '[':
			s.i++
			depth++
			continue
		case c == '}' || c == ']':
			if depth == 0 {
				s.fail("unexpected %q", c)
				return
			}
			s.i++
			depth--
		case c == ',' || c == ':':
			if depth == 0 {
				s.fail("unexpected %q", c)
				return
			}
			s.i++
			continue
		case c == '"':
			s.str()
		case c == 't':
			s.literal("true")
		case c == 'f':
			s.literal("false")
		case c == 'n':
			s.literal("null")
		case c == '-' || (c >= '0' && c <= '9'):
			if len(s.number()) == 0 {
				s.fail("bad number")
			}
		default:
			s.fail("unexpected %q", c)
			return
		}
		if depth == 0 {
			return
		}
	}
}

// setString stores b in *dst, reusing the string already there when it is
// equal, so polling a miner that reports the same names does not allocate.
func setString(dst *string, b []byte) {
	if *dst != string(b) {
		*dst = string(b)
	}
}
