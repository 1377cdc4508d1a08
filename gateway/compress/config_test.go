package compress

import (
	"errors"
	"strings"
	"testing"

	"github.com/meridian-platform/meridian"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name  string
		cfg   Config
		field string // "" when valid
		msg   string // part of the message
	}{
		{"zero value", Config{}, "", ""},
		{"everything set", Config{Encodings: []string{"gzip", "br"}, MinSize: 1, ContentTypes: []string{"Text/", "application/json"}, Level: "default"}, "", ""},
		{"largest min size", Config{MinSize: MaxMinSize}, "", ""},
		{"unknown encoding", Config{Encodings: []string{"gzip", "deflate"}}, "encodings[1]", `"deflate" is not one of zstd, br, gzip`},
		{"encoding names are lowercase", Config{Encodings: []string{"GZIP"}}, "encodings[0]", "not one of"},
		{"duplicate encoding", Config{Encodings: []string{"br", "zstd", "br"}}, "encodings[2]", "listed twice"},
		{"negative min size", Config{MinSize: -1}, "min_size", "must not be negative"},
		{"min size too large", Config{MinSize: MaxMinSize + 1}, "min_size", "above the limit"},
		{"wildcard type", Config{ContentTypes: []string{"text/*"}}, "content_types[0]", `write "text/"`},
		{"type without slash", Config{ContentTypes: []string{"application/json", "json"}}, "content_types[1]", "not a media type"},
		{"type with parameters", Config{ContentTypes: []string{"text/html; charset=utf-8"}}, "content_types[0]", "no parameters"},
		{"empty type", Config{ContentTypes: []string{""}}, "content_types[0]", "not a media type"},
		{"event stream", Config{ContentTypes: []string{"text/event-stream"}}, "content_types[0]", "never compressed"},
		{"grpc", Config{ContentTypes: []string{"application/grpc+proto"}}, "content_types[0]", "never compressed"},
		{"unknown level", Config{Level: "best"}, "level", `"best" is not one of fastest, default`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				if _, err := New(tt.cfg); err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			var me *meridian.Error
			if !errors.As(err, &me) || me.Code != meridian.CodeInvalid || me.Field != tt.field || !strings.Contains(me.Message, tt.msg) {
				t.Fatalf("Validate = %v; want an invalid error on %s saying %q", err, tt.field, tt.msg)
			}
			if _, err := New(tt.cfg); err == nil {
				t.Fatal("New accepted what Validate refused")
			}
		})
	}
}

func TestWithDefaults(t *testing.T) {
	c := Config{ContentTypes: []string{"Application/JSON"}}.withDefaults()
	if strings.Join(c.Encodings, ",") != "zstd,br,gzip" || c.MinSize != DefaultMinSize || c.Level != "fastest" {
		t.Errorf("defaults = %+v", c)
	}
	if c.ContentTypes[0] != "application/json" {
		t.Errorf("content types not lowercased: %q", c.ContentTypes)
	}
	for i, typ := range DefaultContentTypes() {
		if err := (&Config{ContentTypes: []string{typ}}).Validate(); err != nil {
			t.Errorf("DefaultContentTypes()[%d]: %v", i, err)
		}
	}
}
