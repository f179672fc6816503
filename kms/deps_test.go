package kms_test

import (
	"os/exec"
	"strings"
	"testing"
)

// An application that only fetches keys links neither the server nor its
// store, and the server links nothing of the media stack.
func TestPackageDependencies(t *testing.T) {
	deps := func(pkg string) []string {
		out, err := exec.Command("go", "list", "-deps", pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		return strings.Fields(string(out))
	}
	const mod = "github.com/securecall/securecall"
	for _, tc := range []struct {
		pkg       string
		forbidden []string
	}{
		{mod + "/kms", []string{mod + "/kms/kmsserver", "go.etcd.io/bbolt", "github.com/jackc/"}},
		{mod + "/kms/kmsserver", []string{mod + "/media", mod + "/kms", "github.com/pion/", "github.com/jackc/"}},
		{mod + "/kms/kmsserver/pgstore", []string{mod + "/media", mod + "/kms", "github.com/pion/"}},
	} {
		for _, d := range deps(tc.pkg) {
			for _, f := range tc.forbidden {
				if d == f || (strings.HasSuffix(f, "/") && strings.HasPrefix(d, f)) {
					t.Errorf("%s depends on %s", tc.pkg, d)
				}
			}
		}
	}
}
