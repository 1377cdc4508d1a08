// Package scenario runs script tests in the spirit of etcd-raft's
// datadriven tests: a testdata file is a sequence of commands, each
// followed by a line starting with "> " that holds what the command did.
// Blank lines and lines starting with "#" are comments. Run the tests with
// -update to rewrite the "> " lines from the actual results, then review
// the diff.
package scenario

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the expected lines of testdata scripts from the actual results")

// Exec runs one command of a script and describes the state it left.
type Exec func(cmd string) (string, error)

// RunDir runs every file matching glob (e.g. "testdata/*.txt") as a
// subtest; newExec gives each script fresh state.
func RunDir(t *testing.T, glob string, newExec func() Exec) {
	t.Helper()
	files, err := filepath.Glob(glob)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no scenarios match %s", glob)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), filepath.Ext(f)), func(t *testing.T) { Run(t, f, newExec()) })
	}
}

// Run runs one script.
func Run(t *testing.T, path string, exec Exec) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	var out []string
	for i, line := range lines {
		if strings.HasPrefix(line, ">") {
			continue // checked (or regenerated) with its command
		}
		out = append(out, line)
		cmd := strings.TrimSpace(line)
		if cmd == "" || strings.HasPrefix(cmd, "#") {
			continue
		}
		got, err := exec(cmd)
		if err != nil {
			t.Fatalf("%s:%d: %s: %v", path, i+1, cmd, err)
		}
		got = "> " + got
		out = append(out, got)
		var want string
		if i+1 < len(lines) && strings.HasPrefix(lines[i+1], ">") {
			want = lines[i+1]
		}
		if !*update && got != want {
			t.Errorf("%s:%d: %s\n got: %s\nwant: %s", path, i+1, cmd, got, want)
		}
	}
	if *update {
		if err := os.WriteFile(path, []byte(strings.Join(out, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
