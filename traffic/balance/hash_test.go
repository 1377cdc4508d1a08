package balance

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestHashHelpers(t *testing.T) {
	h := http.Header{}
	h.Set("X-User-Id", "alice")
	h.Add("X-Tenant", "acme")
	h.Add("X-Tenant", "globex")
	h.Add("Cookie", `theme=dark; session="s-42"`)
	h.Add("Cookie", "cart=c-7; empty=")

	for _, tc := range []struct {
		name string
		got  uint64
		want uint64
	}{
		{"header", HashHeader(h, "X-User-Id"), HashString("alice")},
		{"header, name not canonical", HashHeader(h, "x-user-id"), HashString("alice")},
		{"repeated header, joined as HTTP combines it", HashHeader(h, "X-Tenant"), HashString("acme, globex")},
		{"absent header", HashHeader(h, "X-Missing"), 0},
		{"quoted cookie", HashCookie(h, "session"), HashString("s-42")},
		{"cookie in a second Cookie line", HashCookie(h, "cart"), HashString("c-7")},
		{"empty cookie is a key", HashCookie(h, "empty"), HashString("")},
		{"absent cookie", HashCookie(h, "sess"), 0},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: %#x, want %#x", tc.name, tc.got, tc.want)
		}
	}
	if HashString("") == 0 || HashString("alice") == HashString("bob") {
		t.Error("HashString returns 0 or collides")
	}

	var got uint64
	mux := http.NewServeMux()
	mux.HandleFunc("/carts/{cart}/items", func(_ http.ResponseWriter, r *http.Request) {
		got = HashPathValue(r, "cart")
		if HashPathValue(r, "nope") != 0 {
			t.Error("a wildcard not in the pattern hashed non-zero")
		}
	})
	mux.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/carts/c-9/items", nil))
	if got != HashString("c-9") {
		t.Errorf("path value: %#x, want %#x", got, HashString("c-9"))
	}

	if n := testing.AllocsPerRun(100, func() {
		HashHeader(h, "X-User-Id")
		HashHeader(h, "X-Tenant")
		HashCookie(h, "cart")
	}); n != 0 {
		t.Errorf("hashing allocates %v times", n)
	}
}
