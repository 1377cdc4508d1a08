package compress

import (
	"io"
	"sync"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// encoder is what the three libraries' streaming writers have in common.
type encoder interface {
	io.WriteCloser
	Flush() error
	Reset(w io.Writer)
}

var (
	_ encoder = (*gzip.Writer)(nil)
	_ encoder = (*zstd.Encoder)(nil)
	_ encoder = (*brotli.Writer)(nil)
)

// pooledEncoder is an encoder with the destination it writes to. The
// encoder is Reset once, onto dst, when it is taken from the pool; putting
// it back only clears dst, so an idle encoder keeps no response alive and
// no encoder state is initialised twice per request.
type pooledEncoder struct {
	encoder
	dst sink
}

// sink forwards to the response being written.
type sink struct{ w io.Writer }

func (s *sink) Write(p []byte) (int, error) { return s.w.Write(p) }

// encoderPool holds idle encoders of one coding at one level.
type encoderPool struct{ p sync.Pool }

func (ep *encoderPool) get(w io.Writer) *pooledEncoder {
	pe := ep.p.Get().(*pooledEncoder)
	pe.dst.w = w
	pe.Reset(&pe.dst)
	return pe
}

func (ep *encoderPool) put(pe *pooledEncoder) {
	pe.dst.w = nil
	ep.p.Put(pe)
}

// newEncoderPool returns the pool for c at level ("fastest" or "default").
//
// The levels: gzip 1 (BestSpeed) or 5 (klauspost's DefaultCompression);
// zstd SpeedFastest or SpeedDefault, with one goroutine-free encoder and a
// 128 KiB window as klauspost's gzhttp uses for HTTP (little memory per
// pooled encoder, four times gzip's 32 KiB); brotli quality 1 or 5. On 10 KiB
// of JSON brotli quality 0 compresses worse than gzip 1 (2285 bytes against
// 1782), and quality 6 (brotli's own default) is no smaller than 5 at over
// twice the time.
func newEncoderPool(c coding, level string) *encoderPool {
	fastest := level == levelFastest
	ep := new(encoderPool)
	switch c {
	case gzipCoding:
		lvl := gzip.DefaultCompression
		if fastest {
			lvl = gzip.BestSpeed
		}
		ep.p.New = func() any {
			w, err := gzip.NewWriterLevel(nil, lvl)
			if err != nil {
				panic(err) // the levels above are valid
			}
			return &pooledEncoder{encoder: w}
		}
	case zstdCoding:
		lvl := zstd.SpeedDefault
		if fastest {
			lvl = zstd.SpeedFastest
		}
		ep.p.New = func() any {
			w, err := zstd.NewWriter(nil,
				zstd.WithEncoderLevel(lvl),
				zstd.WithEncoderConcurrency(1),
				zstd.WithLowerEncoderMem(true),
				zstd.WithWindowSize(128<<10),
			)
			if err != nil {
				panic(err) // the options above are valid
			}
			return &pooledEncoder{encoder: w}
		}
	case brCoding:
		lvl := 5
		if fastest {
			lvl = 1
		}
		ep.p.New = func() any {
			return &pooledEncoder{encoder: brotli.NewWriterLevel(nil, lvl)}
		}
	default:
		panic("compress: no encoder for " + c.String())
	}
	return ep
}
