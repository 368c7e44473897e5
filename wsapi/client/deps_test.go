package client

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestClient_DoesNotLinkServer keeps the seam of issue 12: a program that
// imports the client links neither the server package nor its JWT code.
// What the client shares with the server lives in package wire.
func TestClient_DoesNotLinkServer(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is not in PATH (%v): this test runs go list to check the client's imports", err)
	}
	out, err := exec.Command(goBin, "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == "/dev/null" {
		t.Fatalf("go env GOMOD = %q, want this module's go.mod", gomod)
	}
	forbidden := []string{
		"github.com/changecast/changecast/wsapi", // the server
		"github.com/golang-jwt/jwt/v5",
	}
	for _, pkg := range []string{"./wsapi/client", "./wire"} {
		cmd := exec.Command(goBin, "list", "-deps", pkg)
		cmd.Dir = filepath.Dir(gomod)
		out, err := cmd.Output()
		if err != nil {
			var stderr string
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = string(ee.Stderr)
			}
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, stderr)
		}
		deps := strings.Fields(string(out))
		if len(deps) == 0 {
			t.Fatalf("go list -deps %s printed nothing", pkg)
		}
		for _, dep := range deps {
			for _, bad := range forbidden {
				if dep == bad {
					t.Errorf("go list -deps %s: got %s, want it absent (move what the client needs into package wire)", pkg, dep)
				}
			}
		}
	}
}
