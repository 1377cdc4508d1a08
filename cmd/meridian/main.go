// Command meridian is Meridian's command-line tool: it runs the control
// plane (meridian server) and talks to it (services, instances, register,
// config, token, …).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(report(os.Stderr, err))
}

// report prints err to w as the one line "meridian: <message>" and returns
// the exit status: 0 without an error, 2 for a usage error, 1 otherwise.
func report(w io.Writer, err error) int {
	if err == nil {
		return 0
	}
	msg := strings.Join(strings.FieldsFunc(err.Error(), func(r rune) bool { return r == '\n' || r == '\r' }), " ")
	fmt.Fprintf(w, "meridian: %s\n", msg)
	var ue *usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}
