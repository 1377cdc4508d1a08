package gateway

// Placeholders for the edge packages being built alongside.
type AuthConfig struct{}

func (*AuthConfig) Validate() error { return nil }

type AuthRequirement struct{}

func (*AuthRequirement) Validate(*AuthConfig) error { return nil }

type CORSConfig struct{}

func (*CORSConfig) Validate() error { return nil }
