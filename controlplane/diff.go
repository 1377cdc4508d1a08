package controlplane

import (
	"strconv"

	"github.com/aymanbagabas/go-udiff"
)

// unifiedDiff is the unified diff (as diff -u writes it, with three lines
// of context) that turns revision fromRev of key, valued from, into
// revision toRev, valued to. The headers name key@revision:
//
//	--- prod/orders/db_url@12
//	+++ prod/orders/db_url@15
//
// Equal values give "".
func unifiedDiff(key string, fromRev uint64, from string, toRev uint64, to string) (string, error) {
	return udiff.ToUnified(
		key+"@"+strconv.FormatUint(fromRev, 10),
		key+"@"+strconv.FormatUint(toRev, 10),
		from, udiff.Lines(from, to), udiff.DefaultContextLines)
}
