// Package compress is the gateway's response compression: it negotiates a
// content coding (zstd, br or gzip) with each client and compresses the
// responses worth compressing, as nginx's gzip and Caddy's encode do.
//
//	mw, err := compress.New(compress.Config{}) // zstd, br, gzip; 1 KiB; fastest
//	if err != nil {
//		return err // a *meridian.Error naming the field
//	}
//	handler = mw(handler)
//
// # What was chosen and why
//
// The encoders are libraries: github.com/klauspost/compress for gzip and
// zstd (faster than the standard library's gzip, and its zstd is the Go
// implementation) and github.com/andybalholm/brotli for br. klauspost's
// gzhttp middleware was the candidate for the rest, but it offers gzip and
// zstd only, orders them by a fixed flag rather than the client's
// q-values and the gateway's list, and knows nothing of Cache-Control:
// no-transform, server-sent events or gRPC; wrapping it and a second
// middleware for brotli would negotiate twice. So the negotiation and the
// ResponseWriter are this package's, about 600 lines of code, and
// the compression is the libraries'.
//
// # Negotiation
//
// Accept-Encoding is read as RFC 9110 §12.5.3 says: q-values (q=0 refuses),
// "*" for codings not listed, identity, case-insensitive names, x-gzip as
// gzip. The client's highest q-value wins and Config.Encodings breaks ties;
// a client that ranks identity above every offered coding gets the
// response uncompressed, and so does a request with no Accept-Encoding.
//
// # What is compressed
//
// A response is compressed when the client accepts an offered coding and
// all of these hold:
//
//   - the request is not HEAD or CONNECT, carries no Upgrade header and is
//     not gRPC (application/grpc*); those requests reach the handler with
//     the server's own ResponseWriter;
//   - the status allows a body and is not 206 (not 1xx, 204 or 304);
//   - the response has no Content-Encoding, no Content-Range and no
//     Cache-Control: no-transform;
//   - its Content-Type (sniffed as net/http would, if the handler set none)
//     matches Config.ContentTypes and is not text/event-stream or
//     application/grpc*: server-sent events pass through unbuffered;
//   - it is at least Config.MinSize bytes long, by its Content-Length or,
//     without one, by what the handler has written before it returns or
//     flushes. A flush, or a Trailer header, decides at once as if the
//     response were long, since it is a stream.
//
// A compressed response gets Content-Encoding, loses Content-Length and
// Accept-Ranges, and a strong ETag becomes weak (W/"…"), as nginx does: the
// bytes differ, the meaning does not. Every response whose type could be
// compressed gets Vary: Accept-Encoding, whatever this client accepted, so
// that a cache never hands a compressed copy to a client that cannot read
// it, nor an uncompressed one to every client after the first.
//
// # The ResponseWriter
//
// The decision waits for the first Write that makes it possible, holding
// back WriteHeader's status and up to MinSize bytes. Flush (and FlushError,
// which http.ResponseController uses) flushes the encoder, so everything
// written so far can be decoded, then the server's writer. Unwrap returns
// the server's ResponseWriter, so http.ResponseController reaches Hijack,
// SetReadDeadline, SetWriteDeadline and EnableFullDuplex; the writer
// implements no Hijacker itself, since on HTTP/2 it could not. Trailers
// pass through: the header map is the server's and the encoder is closed
// before the handler's return is seen by net/http. 1xx statuses other than
// 101 are sent at once.
//
// Encoders are pooled per coding (sync.Pool) and reset onto each response;
// the ResponseWriters and their buffers are pooled too, so once the pools
// are warm the middleware allocates nothing per response (weakening an
// ETag aside). BenchmarkJSON10KiB measures a 10 KiB JSON response in each
// coding beside klauspost's gzhttp.
//
// # Levels
//
// Level "fastest", the default, is gzip 1, zstd SpeedFastest and brotli
// quality 1; "default" is gzip 5 (klauspost's default), zstd SpeedDefault
// and brotli 5 (brotli's own 6 is no smaller on API responses and twice as
// slow). zstd runs one synchronous encoder with a 128 KiB window, as gzhttp
// does: little memory per pooled encoder, four times gzip's window.
package compress
