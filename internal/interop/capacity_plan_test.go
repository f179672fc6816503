package interop

import (
	"reflect"
	"testing"
)

// The capacity benchmark's SECURECALL_CAPACITY_PAIRS: a plain list runs
// every stack at each N; per-stack lists interleave the stacks named,
// round i running each one's i-th N; anything else is refused.
func TestCapacityPlan(t *testing.T) {
	known := []string{"pion", "securecall-push", "udp-floor-batch"}
	for _, tc := range []struct {
		in   string
		want [][]capacityRun
	}{
		{"", [][]capacityRun{
			{{"pion", 100}, {"securecall-push", 100}, {"udp-floor-batch", 100}},
			{{"pion", 200}, {"securecall-push", 200}, {"udp-floor-batch", 200}},
			{{"pion", 400}, {"securecall-push", 400}, {"udp-floor-batch", 400}},
		}},
		{"300, 500", [][]capacityRun{
			{{"pion", 300}, {"securecall-push", 300}, {"udp-floor-batch", 300}},
			{{"pion", 500}, {"securecall-push", 500}, {"udp-floor-batch", 500}},
		}},
		{"pion:225,250,275;securecall-push:900,1000", [][]capacityRun{
			{{"pion", 225}, {"securecall-push", 900}},
			{{"pion", 250}, {"securecall-push", 1000}},
			{{"pion", 275}},
		}},
	} {
		got, err := capacityPlan(tc.in, known)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("capacityPlan(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"0", "100,x", "pion:", "pion:100;pion:200", "nosuch:100", "pion:100,-1", "pion=100:200"} {
		if got, err := capacityPlan(in, known); err == nil {
			t.Errorf("capacityPlan(%q) = %v, want an error", in, got)
		}
	}
}
