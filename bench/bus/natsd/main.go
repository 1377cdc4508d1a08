// Command natsd is the NATS server with JetStream the bus benchmark runs
// against, as its own process (so it can be pinned to its own CPU): the
// same embedded server `meridian server` runs (internal/natsembed), with
// the listener --nats-listen gives it.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/meridian-platform/meridian/internal/natsembed"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:7422", "host:port to listen on (loopback)")
	store := flag.String("store", "", "JetStream store directory (required)")
	flag.Parse()
	ns, err := natsembed.Start(natsembed.Options{StoreDir: *store, Listen: *listen, ServerName: "bench"})
	if err != nil {
		fmt.Fprintln(os.Stderr, "natsd:", err)
		os.Exit(1)
	}
	fmt.Println("ready", ns.ClientURL())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	<-sig
	ns.Shutdown()
	ns.WaitForShutdown()
}
