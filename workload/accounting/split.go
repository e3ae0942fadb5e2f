package accounting

import (
	"math/bits"
)

// splitExact divides total (>= 0) into len(weights) integer shares in
// proportion to weights, by largest remainder: the shares always add up
// to total exactly. With all weights zero it splits evenly by count. It
// writes into out (len(weights)) and allocates nothing.
func splitExact(total int64, weights []uint64, out []int64) {
	n := len(weights)
	if n == 0 {
		return
	}
	var sum uint64
	overflow := false
	for _, w := range weights {
		var c uint64
		sum, c = bits.Add64(sum, w, 0)
		overflow = overflow || c != 0
	}
	if overflow { // halve every weight until the sum fits
		splitScaled(total, weights, out)
		return
	}
	if sum == 0 {
		for i := range out[:n] {
			out[i] = total / int64(n)
		}
		for i := 0; i < int(total%int64(n)); i++ {
			out[i]++
		}
		return
	}
	t := uint64(total)
	var given uint64
	for i, w := range weights {
		hi, lo := bits.Mul64(t, w)
		q, _ := bits.Div64(hi, lo, sum) // q <= t, so hi < sum
		out[i] = int64(q)
		given += q
	}
	// Hand what floor left over to the largest remainders, first come
	// first served on ties; at most n-1 units.
	for left := t - given; left > 0; left-- {
		best, bestRem := -1, uint64(0)
		for i, w := range weights {
			hi, lo := bits.Mul64(t, w)
			_, rem := bits.Div64(hi, lo, sum)
			// Subtract what this share already got beyond its floor.
			if uint64(out[i]) > floorShare(t, w, sum) {
				continue
			}
			if best < 0 || rem > bestRem {
				best, bestRem = i, rem
			}
		}
		out[best]++
	}
}

func floorShare(t, w, sum uint64) uint64 {
	hi, lo := bits.Mul64(t, w)
	q, _ := bits.Div64(hi, lo, sum)
	return q
}

func splitScaled(total int64, weights []uint64, out []int64) {
	var buf [16]uint64
	scaled := buf[:0]
	if len(weights) > len(buf) {
		scaled = make([]uint64, 0, len(weights))
	}
	for _, w := range weights {
		scaled = append(scaled, w>>8)
	}
	splitExact(total, scaled, out)
}
