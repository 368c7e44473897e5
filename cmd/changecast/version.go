package main

import (
	"fmt"
	"runtime/debug"
)

// version reads the module version and VCS stamp the Go toolchain embedded.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "changecast (unknown build)"
	}
	v := bi.Main.Version
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	if rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		return fmt.Sprintf("changecast %s (%s%s, %s)", v, rev, dirty, bi.GoVersion)
	}
	return fmt.Sprintf("changecast %s (%s)", v, bi.GoVersion)
}
