package gateway

// Placeholders for the edge packages being built alongside.
type CORSConfig struct{}

func (*CORSConfig) Validate() error { return nil }
