package compress

import "testing"

func TestNegotiate(t *testing.T) {
	all := []coding{zstdCoding, brCoding, gzipCoding}
	tests := []struct {
		name   string
		values []string // nil: no Accept-Encoding field
		prefs  []coding
		want   coding
	}{
		{"no field", nil, all, none},
		{"empty field", []string{""}, all, none},
		{"gzip only", []string{"gzip"}, all, gzipCoding},
		{"chrome", []string{"gzip, deflate, br, zstd"}, all, zstdCoding},
		{"firefox without zstd", []string{"gzip, deflate, br"}, all, brCoding},
		{"q-values rank", []string{"gzip;q=1, br;q=0.5, zstd;q=0.2"}, all, gzipCoding},
		{"q=0 refuses", []string{"zstd;q=0, gzip"}, all, gzipCoding},
		{"everything refused", []string{"gzip;q=0, br;q=0.000"}, all, none},
		{"star takes the first preference", []string{"*"}, all, zstdCoding},
		{"star ranks unlisted codings", []string{"*;q=0.5, gzip"}, all, gzipCoding},
		{"star q=0 refuses the unlisted", []string{"br;q=0.1, *;q=0"}, all, brCoding},
		{"star q=0 alone", []string{"*;q=0"}, all, none},
		{"identity only", []string{"identity"}, all, none},
		{"identity preferred", []string{"identity;q=1, gzip;q=0.5"}, all, none},
		{"identity ranked lower", []string{"gzip, identity;q=0.5"}, all, gzipCoding},
		{"identity tie goes to the coding", []string{"gzip;q=0.5, identity;q=0.5"}, all, gzipCoding},
		{"identity refused", []string{"identity;q=0, gzip;q=0.5"}, all, gzipCoding},
		{"star stands for identity", []string{"gzip;q=0.1, *;q=0.9"}, []coding{gzipCoding}, none},
		{"tie broken by config order", []string{"gzip;q=0.5, br;q=0.5"}, all, brCoding},
		{"tie broken by other config order", []string{"gzip, br, zstd"}, []coding{gzipCoding, brCoding}, gzipCoding},
		{"only unoffered codings", []string{"zstd"}, []coding{gzipCoding, brCoding}, none},
		{"unknown codings", []string{"deflate, compress"}, all, none},
		{"case-insensitive", []string{"GZIP, Br;Q=0.1"}, all, gzipCoding},
		{"x-gzip", []string{"x-gzip"}, all, gzipCoding},
		{"malformed q ignored", []string{"gzip;q=abc, br;q=0.2"}, all, brCoding},
		{"q above 1 ignored", []string{"zstd;q=1.5, gzip;q=0.3"}, all, gzipCoding},
		{"smallest q", []string{"br;q=0.001"}, all, brCoding},
		{"several fields", []string{"gzip;q=0.2", "br;q=0.9"}, all, brCoding},
		{"whitespace", []string{" gzip ; q=0.8 ,\tbr;q=0.9 "}, all, brCoding},
		{"empty elements", []string{", ,gzip,"}, all, gzipCoding},
		{"listed twice", []string{"gzip;q=0, gzip;q=0.5"}, all, gzipCoding},
		{"other parameters", []string{"br;level=4;q=0.7, gzip;q=0.6"}, all, brCoding},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := negotiate(tt.values, tt.prefs); got != tt.want {
				t.Errorf("negotiate(%q) = %v, want %v", tt.values, got, tt.want)
			}
		})
	}
}

func TestNegotiateDoesNotAllocate(t *testing.T) {
	values := []string{"gzip;q=0.8, deflate, br;q=0.9, zstd;q=0.95, identity;q=0.1, *;q=0"}
	prefs := []coding{zstdCoding, brCoding, gzipCoding}
	if n := testing.AllocsPerRun(100, func() { negotiate(values, prefs) }); n != 0 {
		t.Errorf("negotiate allocates %v times", n)
	}
}

func TestParseQ(t *testing.T) {
	tests := []struct {
		in   string
		want int
		ok   bool
	}{
		{"0", 0, true},
		{"1", 1000, true},
		{"0.", 0, true},
		{"1.", 1000, true},
		{"0.5", 500, true},
		{"0.25", 250, true},
		{"0.125", 125, true},
		{"1.000", 1000, true},
		{"1.001", 0, false},
		{"0.1234", 0, false},
		{"2", 0, false},
		{"", 0, false},
		{".5", 0, false},
		{"0,5", 0, false},
		{"0.5x", 0, false},
		{"-0", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseQ(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseQ(%q) = %d, %t; want %d, %t", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}
