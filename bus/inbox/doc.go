// Package inbox makes event consumers idempotent.
package inbox
