package e2e

import (
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// modulePrefix is the import path prefix of every module of the workspace.
const modulePrefix = "github.com/tidestream/tidestream/"

// TestStageModulesImportNoOtherStage enforces DESIGN.md §4 and §8: a stage
// module never imports another stage, and proto imports nothing of ours;
// stages share the stream contract (proto), not each other. The coordinator
// may use the encoder's schema history (DESIGN §3). Only services and e2e
// assemble several stages. Test files count: a test that drags another
// stage in couples the modules just the same.
func TestStageModulesImportNoOtherStage(t *testing.T) {
	allowed := map[string][]string{
		"proto":       nil,
		"puller":      {"proto"},
		"sorter":      {"proto"},
		"encoder":     {"proto"},
		"producer":    {"proto"},
		"coordinator": {"proto", "encoder"},
	}
	for mod, ok := range allowed {
		cmd := exec.Command("go", "list", "-deps", "-test", "-f", "{{.ImportPath}}", "./...")
		cmd.Dir = filepath.Join("..", mod)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go list in %s: %v\n%s", mod, err, out)
		}
		for _, path := range strings.Fields(string(out)) {
			rest, ours := strings.CutPrefix(path, modulePrefix)
			if !ours {
				continue
			}
			other, _, _ := strings.Cut(rest, "/")
			// A root package's external test and test main.
			other = strings.TrimSuffix(strings.TrimSuffix(other, ".test"), "_test")
			if other == mod || slices.Contains(ok, other) {
				continue
			}
			t.Errorf("module %s imports %s (module %s): stage modules share proto, never each other", mod, path, other)
		}
	}
}
