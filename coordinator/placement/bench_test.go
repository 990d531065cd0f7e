package placement_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/tidestream/tidestream/coordinator/placement"
	pb "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// BenchmarkPlan10k is the owner's tick at 10,000 pipelines: the steady
// state is what it pays every tick, the others when the cluster changes.
func BenchmarkPlan10k(b *testing.B) {
	const n = 10_000
	for _, perRoleN := range []int{2, 25} {
		members := perRole(perRoleN)
		ps := pipelines("cf", n)
		res, err := placement.Plan(placement.Input{Pipelines: ps, Members: members})
		if err != nil {
			b.Fatal(err)
		}
		steady := make([]*pb.PipelineAssignment, 0, n)
		for _, op := range res.Ops {
			steady = append(steady, op.Assign)
		}
		gone := slices.DeleteFunc(slices.Clone(members), func(m placement.Member) bool { return m.ID == "producer00" })
		joined := append(slices.Clone(members), member("sorter99", placement.RoleSorter))
		for _, bc := range []struct {
			name string
			in   placement.Input
		}{
			{"all new", placement.Input{Pipelines: ps, Members: members}},
			{"steady", placement.Input{Pipelines: ps, Members: members, Current: steady, MaxMoves: 64}},
			{"one member gone", placement.Input{Pipelines: ps, Members: gone, Current: steady, MaxMoves: 64}},
			{"one member joined", placement.Input{Pipelines: ps, Members: joined, Current: steady, MaxMoves: 64}},
		} {
			b.Run(fmt.Sprintf("members=%d/%s", len(members), bc.name), func(b *testing.B) {
				b.ReportAllocs()
				var ops int
				for b.Loop() {
					res, err := placement.Plan(bc.in)
					if err != nil {
						b.Fatal(err)
					}
					ops = len(res.Ops)
				}
				b.ReportMetric(float64(ops), "writes")
			})
		}
	}
}
