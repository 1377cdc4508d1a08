// Package docs embeds the documents the server serves.
package docs

import _ "embed"

// OpenAPI is the OpenAPI 3 description of the control-plane API.
//
//go:embed openapi.yaml
var OpenAPI []byte
