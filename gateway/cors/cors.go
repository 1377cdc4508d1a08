// Package cors answers cross-origin requests for gateway routes: it
// answers preflights at the gateway and adds the Access-Control-* headers
// that let browsers read the responses of allowed origins.
//
//	mw, err := cors.New(cors.Config{
//		AllowOrigins:     []string{"https://app.example.com", "https://*.example.com"},
//		AllowMethods:     []string{"GET", "POST", "PUT", "DELETE"},
//		AllowHeaders:     []string{"Authorization", "Content-Type"},
//		AllowCredentials: true,
//		MaxAge:           meridian.Duration(10 * time.Minute),
//	})
//	if err != nil {
//		return err // a *meridian.Error naming the field
//	}
//	route = mw(route)
//
// # What was chosen and why
//
// The protocol is github.com/rs/cors: widely used, small, no dependencies,
// allocation-free on the common path, and it already does what a gateway
// needs: answering preflights without forwarding them, reflecting the one
// requested method and headers, Vary on every response. What it lacks is
// a strict config: it allows every origin when given none, falls back to
// a default header list, accepts "*" with credentials, and takes malformed
// origins as patterns that never match. So Config is validated in front of
// it, field by field, and New translates it; origin matching is this
// package's (see Config.AllowOrigins) rather than rs/cors' substring
// wildcard, so that "*" stands only for whole host labels.
//
// # Behaviour
//
// A preflight is an OPTIONS request with Access-Control-Request-Method. It
// is answered here with 204 No Content and never reaches the next handler.
// An allowed one carries Access-Control-Allow-Origin, -Allow-Methods (the
// method asked for), -Allow-Headers (those asked for), -Allow-Credentials
// and -Max-Age as configured. A refused one (origin, method or a header
// not allowed) is still 204, as rs/cors answers, but without any
// Access-Control-Allow-* header, which is what makes the browser refuse
// the actual request; a 403 would tell it no more.
//
// Any other request goes to the next handler. When its Origin is allowed
// and its method is in AllowMethods, the response carries
// Access-Control-Allow-Origin (the request's origin, or "*" when every
// origin is allowed without credentials: never "*" with credentials),
// -Allow-Credentials and -Expose-Headers. A request from any other origin
// is still served, without those headers, so the browser withholds the
// answer from the page: CORS protects browser users, it is not access
// control. Every response carries Vary: Origin (a preflight's also
// Access-Control-Request-Method and -Headers), so caches keep one copy
// per origin.
//
// The next handler's own Access-Control-* headers are not removed: a
// route behind this middleware should not also set them upstream.
package cors

import (
	"net/http"
	"time"

	"github.com/rs/cors"
)

// New returns the CORS middleware for cfg, or cfg's first invalid field as
// a *meridian.Error. The middleware is safe for concurrent use.
func New(cfg Config) (func(http.Handler) http.Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	opts := cors.Options{
		AllowedMethods:   cfg.AllowMethods,
		AllowedHeaders:   cfg.AllowHeaders,
		ExposedHeaders:   cfg.ExposeHeaders,
		AllowCredentials: cfg.AllowCredentials,
		MaxAge:           int(cfg.MaxAge.D() / time.Second), // 0: no header
		// Preflights stop here: the next handler (authentication, the
		// upstream) would answer OPTIONS wrongly or not at all.
		OptionsPassthrough:   false,
		OptionsSuccessStatus: http.StatusNoContent,
	}
	if len(opts.AllowedMethods) == 0 {
		opts.AllowedMethods = defaultMethods
	}
	if len(opts.AllowedHeaders) == 0 {
		// rs/cors would allow Accept, Content-Type and X-Requested-With
		// for an empty list. A set holding only the empty name allows no
		// name a preflight can ask for, which is our default.
		opts.AllowedHeaders = []string{""}
	}
	if cfg.AllowOrigins[0] == "*" {
		opts.AllowedOrigins = []string{"*"} // answered with a literal "*"
	} else {
		allowed := compileOrigins(cfg.AllowOrigins)
		opts.AllowOriginFunc = allowed.allowed // answered with the request's origin
	}
	return cors.New(opts).Handler, nil
}
