package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
)

func TestSelectSystems(t *testing.T) {
	tests := []struct {
		name, only string
		want       []string
		wantErr    bool
	}{
		{name: "all by default", only: "", want: allSystems},
		{name: "standard order whatever the order given", only: "haproxy,nginx", want: []string{nginxName, haproxyName}},
		{name: "meridian means both", only: "direct,meridian", want: []string{direct, meridianPlain, meridianFull}},
		{name: "spaces and empty items", only: " caddy ,,", want: []string{caddyName}},
		{name: "unknown", only: "envoy", wantErr: true},
		{name: "nothing", only: ",", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := selectSystems(tc.only)
			if (err != nil) != tc.wantErr || !slices.Equal(got, tc.want) {
				t.Fatalf("selectSystems(%q) = %v, %v; want %v (error %v)", tc.only, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

// TestPeerConfigsValidate has each installed peer check the config the
// benchmark writes for it; a peer that is not installed is skipped
// (run.sh installs them).
func TestPeerConfigsValidate(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		bin  string
		args func() []string
	}{
		{"nginx", func() []string {
			return []string{"-t", "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", write("nginx.conf", []byte(nginxConf(dir, 18001, 18002, 20000)))}
		}},
		{"haproxy", func() []string {
			return []string{"-c", "-f", write("haproxy.cfg", []byte(haproxyConf(18001, 18002, 20000)))}
		}},
		{"caddy", func() []string { return []string{"validate", "--config", write("caddy.json", caddyConf(18001, 18002))} }},
	} {
		t.Run(tc.bin, func(t *testing.T) {
			path, err := exec.LookPath(tc.bin)
			if err != nil {
				if path, err = exec.LookPath("/usr/sbin/" + tc.bin); err != nil {
					t.Skipf("%s is not installed", tc.bin)
				}
			}
			cmd := exec.Command(path, tc.args()...)
			cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s rejects its config: %v\n%s", tc.bin, err, out)
			}
		})
	}
}
