package cfgcheck

import (
	"strings"
	"testing"
)

type inner struct {
	Value []byte
}

type config struct {
	Name    string
	List    []inner
	Map     map[string][]int
	Any     any
	Ptr     *int
	Func    func()
	private []byte
}

func TestSnapshotSeesElementChanges(t *testing.T) {
	n := 1
	cfg := config{
		Name: "x", List: []inner{{Value: []byte{1, 2}}}, Map: map[string][]int{"a": {1}},
		Any: []byte{9}, Ptr: &n, Func: func() {}, private: []byte{5},
	}
	before := Snapshot(cfg)
	if d := Diff(before, cfg); d != "" {
		t.Fatalf("a snapshot differs from its original: %s", d)
	}
	shallow := cfg
	for _, tc := range []struct {
		name   string
		mutate func()
		undo   func()
		want   string
	}{
		{"slice element", func() { cfg.List[0].Value[1] = 7 }, func() { cfg.List[0].Value[1] = 2 }, ".List[0].Value[1]"},
		{"map value", func() { cfg.Map["a"][0] = 3 }, func() { cfg.Map["a"][0] = 1 }, ".Map[a][0]"},
		{"interface value", func() { cfg.Any.([]byte)[0] = 0 }, func() { cfg.Any.([]byte)[0] = 9 }, ".Any[0]"},
		{"pointer", func() { m := 1; cfg.Ptr = &m }, func() { cfg.Ptr = &n }, ".Ptr"},
		{"func", func() { cfg.Func = nil }, func() { cfg.Func = shallow.Func }, ".Func"},
	} {
		tc.mutate()
		if d := Diff(before, cfg); !strings.Contains(d, tc.want) {
			t.Errorf("%s: Diff = %q, want it to name %s", tc.name, d, tc.want)
		}
		if tc.name != "pointer" && tc.name != "func" && Diff(shallow, cfg) != "" {
			t.Errorf("%s: a shallow copy saw the change, so this case proves nothing", tc.name)
		}
		tc.undo()
	}
	// What the config refers to is not followed: a change behind a
	// pointer is not the config's.
	n = 2
	if d := Diff(before, cfg); d != "" {
		t.Errorf("change behind a pointer reported: %s", d)
	}
}
