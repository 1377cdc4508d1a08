package benchenv

import "net"

// FreePorts returns n distinct free TCP ports on 127.0.0.1, none of them a
// port the machine's shared services or Meridian use or may use (see
// reservedPort). They are free when chosen; the server binds them a moment
// later, a race a benchmark can live with.
func FreePorts(n int) ([]int, error) {
	return freePorts(n, func() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") })
}

// freePorts takes ports from listen until it has n that are not reserved.
// It holds every listener until it returns, so that the kernel hands out
// no port twice.
func freePorts(n int, listen func() (net.Listener, error)) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	ports := make([]int, 0, n)
	for len(ports) < n {
		ln, err := listen()
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		if p := ln.Addr().(*net.TCPAddr).Port; !reservedPort(p) {
			ports = append(ports, p)
		}
	}
	return ports, nil
}

// reservedPort reports whether p belongs to the shared services
// (PostgreSQL 5432, Redis 6379, RabbitMQ 5672, MQTT 1883, NATS 4222) or
// to Meridian's block, 7400–7409.
func reservedPort(p int) bool {
	switch p {
	case 5432, 6379, 5672, 1883, 4222:
		return true
	}
	return p >= 7400 && p <= 7409
}
