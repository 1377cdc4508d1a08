package compress

import "strings"

// coding is a content coding the middleware can produce; none is identity.
type coding uint8

const (
	none coding = iota
	zstdCoding
	brCoding
	gzipCoding
	numCodings
)

var codingNames = [numCodings]string{"identity", "zstd", "br", "gzip"}

func (c coding) String() string { return codingNames[c] }

// codingByName maps a configured encoding name; names are exact and
// lowercase in config.
func codingByName(name string) (coding, bool) {
	switch name {
	case "zstd":
		return zstdCoding, true
	case "br":
		return brCoding, true
	case "gzip":
		return gzipCoding, true
	}
	return none, false
}

// negotiate picks the content coding for a response from the request's
// Accept-Encoding field values (RFC 9110 §12.5.3) and the codings offered,
// in order of preference. It returns none when the request has no
// Accept-Encoding, accepts none of prefs, or prefers identity.
//
//   - Each offered coding's weight is its own q-value if listed, else that
//     of "*" if listed, else it is not acceptable. q=0 refuses.
//   - The highest weight wins; among equals, the earlier in prefs.
//   - identity (or "*" when identity is not listed) with a strictly higher
//     weight than the winner means the client would rather have the
//     response uncompressed. An identity that is not mentioned ranks
//     below every acceptable coding, as every browser expects.
//   - Names are case-insensitive and "x-gzip" is gzip (§8.4.1.3). An
//     element whose q-value is malformed is ignored, as if not sent; when
//     a coding is listed twice, its highest weight counts.
//
// A request without the field is answered uncompressed: RFC 9110 lets a
// server pick any coding then, but clients that send none (curl, many
// HTTP libraries) do not decode, and no proxy does so.
//
// It does not allocate.
func negotiate(values []string, prefs []coding) coding {
	// Weights in thousandths; -1 is "not listed".
	var weight [numCodings]int
	for i := range weight {
		weight[i] = -1
	}
	star := -1
	for _, v := range values {
		for v != "" {
			var elem string
			elem, v, _ = strings.Cut(v, ",")
			name, params, _ := strings.Cut(elem, ";")
			name = strings.Trim(name, " \t")
			if name == "" {
				continue
			}
			q, ok := 1000, true
			for params != "" && ok {
				var p string
				p, params, _ = strings.Cut(params, ";")
				k, val, _ := strings.Cut(p, "=")
				if strings.EqualFold(strings.Trim(k, " \t"), "q") {
					q, ok = parseQ(strings.Trim(val, " \t"))
				}
			}
			if !ok {
				continue
			}
			var slot *int
			switch {
			case strings.EqualFold(name, "gzip"), strings.EqualFold(name, "x-gzip"):
				slot = &weight[gzipCoding]
			case strings.EqualFold(name, "br"):
				slot = &weight[brCoding]
			case strings.EqualFold(name, "zstd"):
				slot = &weight[zstdCoding]
			case strings.EqualFold(name, "identity"):
				slot = &weight[none]
			case name == "*":
				slot = &star
			default:
				continue
			}
			*slot = max(*slot, q)
		}
	}
	best, bestW := none, 0
	for _, c := range prefs {
		w := weight[c]
		if w < 0 {
			w = star
		}
		if w > bestW {
			best, bestW = c, w
		}
	}
	if best == none {
		return none
	}
	identity := weight[none]
	if identity < 0 {
		identity = star
	}
	if identity > bestW {
		return none
	}
	return best
}

// parseQ parses an RFC 9110 qvalue ("0", "0.5", "1.000") into thousandths.
func parseQ(s string) (int, bool) {
	if s == "" || (s[0] != '0' && s[0] != '1') {
		return 0, false
	}
	whole := int(s[0]-'0') * 1000
	s = s[1:]
	if s == "" {
		return whole, true
	}
	if s[0] != '.' || len(s) > 4 {
		return 0, false
	}
	frac, scale := 0, 100
	for i := 1; i < len(s); i++ {
		d := s[i]
		if d < '0' || d > '9' {
			return 0, false
		}
		frac += int(d-'0') * scale
		scale /= 10
	}
	if whole+frac > 1000 {
		return 0, false
	}
	return whole + frac, true
}
