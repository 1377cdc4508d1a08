// Package sdk is Meridian's Go SDK: a service declares itself and runs.
//
//	svc, err := sdk.New(sdk.Config{Name: "orders", Version: "1.4.2", ControlPlane: "127.0.0.1:7400", Token: token})
//	…
//	err = svc.Run(ctx, mux)
//
// Run owns the service's lifecycle: it listens, serves the handler with
// /healthz and /readyz beside it, registers the instance with the control
// plane and keeps its lease with heartbeats, and on SIGTERM, SIGINT or the
// end of ctx deregisters, drains and shuts down gracefully (see
// Service.Run for the exact order). A control-plane outage never stops a
// service: it goes on serving, retrying in the background.
//
// The service's discovery cache (Service.Discovery, package
// traffic/discovery) shares its control-plane client and runs with it.
//
// Other services are called by name: Service.HTTPClient sends
// http://<service>/… to an instance of that service, and
// Service.GRPCClient connects to meridian:///<service>, both through the
// resiliency policies the service's spec in the config center names for
// that upstream (meridian/resiliency/<name>, package traffic/policy;
// built-in policies while there is none), reloaded without dropping
// requests (package traffic/outbound). Run's server reads the caller's
// deadline (Meridian-Timeout) and sheds load beyond capacity with 503
// (Config.NoDeadline and Config.NoShed turn them off).
//
// BindConfig binds a config key of the config center to a Go type, keeping
// it current as new revisions are written, and never replacing a good
// value with one that does not decode.
//
// Configuration comes from a Config literal or from the environment
// (ConfigFromEnv, MERIDIAN_* variables).
package sdk
