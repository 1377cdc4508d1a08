// Package echopb is the Go code generated from
// internal/grpctest/proto/meridian/test/echo/v1/echo.proto: the Echo test
// service's messages, client and server interfaces. Regenerate it with
// `go generate ./internal/grpctest`.
package echopb
