package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tidestream/tidestream/coordinator/cdcerr"
	pb "github.com/tidestream/tidestream/proto/tidestream/v1"
)

// Pipeline assignments and progress (KEYS.md): the owner writes where each
// table pipeline runs, the producer it names writes how far it got, fenced
// on the assignment it runs.

// AssignmentPrefix is the prefix of the assignments of one producer member,
// or of every member when member is "".
func (k Keys) AssignmentPrefix(member string) string {
	if member == "" {
		return k.prefix + "/assignment/"
	}
	return k.prefix + "/assignment/" + member + "/"
}

// Assignment is the key of a pipeline's assignment to a producer member.
func (k Keys) Assignment(member, namespace, changefeed string, pipeline int64) string {
	return k.AssignmentPrefix(member) + namespace + "/" + changefeed + "/" + strconv.FormatInt(pipeline, 10)
}

// ParseAssignment returns the parts of an assignment key.
func (k Keys) ParseAssignment(key string) (member, namespace, changefeed string, pipeline int64, ok bool) {
	rest, found := strings.CutPrefix(key, k.AssignmentPrefix(""))
	if !found {
		return "", "", "", 0, false
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 4 {
		return "", "", "", 0, false
	}
	id, err := strconv.ParseInt(parts[3], 10, 64)
	if err != nil {
		return "", "", "", 0, false
	}
	return parts[0], parts[1], parts[2], id, true
}

// ProgressPrefix is the prefix of the progress records of one changefeed.
func (k Keys) ProgressPrefix(namespace, changefeed string) string {
	return k.prefix + "/progress/" + namespace + "/" + changefeed + "/"
}

// Progress is the key of a pipeline's progress record.
func (k Keys) Progress(namespace, changefeed string, pipeline int64) string {
	return k.ProgressPrefix(namespace, changefeed) + strconv.FormatInt(pipeline, 10)
}

// Assignment is a stored assignment and the mod revision it was read at:
// the fence of the producer's progress writes.
type Assignment struct {
	Record      *pb.PipelineAssignment
	Key         string
	ModRevision int64
}

// Assign writes a pipeline's assignment under the owner's fence. from is
// the producer member the pipeline was assigned to before ("" for a new
// pipeline): when it differs, its key is deleted in the same transaction,
// so a pipeline is never assigned to two producers and the old producer's
// next progress write fails its fence.
func (s *Store) Assign(ctx context.Context, fence Fence, a *pb.PipelineAssignment, from string) error {
	return s.ApplyAssignments(ctx, fence, []AssignmentOp{{Put: a, From: from}})
}

// Unassign deletes a pipeline's assignment (the pipeline stopped: its table
// was dropped, or its changefeed paused or removed) under the owner's fence.
func (s *Store) Unassign(ctx context.Context, fence Fence, member, namespace, changefeed string, pipeline int64) error {
	return s.ApplyAssignments(ctx, fence, []AssignmentOp{{Delete: &pb.PipelineAssignment{
		ProducerMember: member, Namespace: namespace, ChangefeedId: changefeed, PipelineId: pipeline}}})
}

// Assignments lists the assignments of a producer member ("" for all) and
// the revision they were read at, from which WatchAssignments continues.
func (s *Store) Assignments(ctx context.Context, member string) ([]*Assignment, int64, error) {
	return s.AssignmentsCached(ctx, member, &AssignmentCache{})
}

// AssignmentCache keeps decoded assignments between AssignmentsCached
// calls, by key and mod revision. The records it hands out are shared
// with later calls: only a caller that never modifies them may use one.
type AssignmentCache struct {
	byKey map[string]*Assignment
}

// AssignmentsCached is Assignments decoding only the records that changed
// since the last call with c. The owner lists every assignment each round;
// at 10,000 pipelines decoding them all was 4% of a server's CPU, though
// they rarely change.
func (s *Store) AssignmentsCached(ctx context.Context, member string, c *AssignmentCache) ([]*Assignment, int64, error) {
	resp, err := s.cli.Get(ctx, s.keys.AssignmentPrefix(member), clientv3.WithPrefix())
	if err != nil {
		return nil, 0, etcdErr("list assignments", err)
	}
	out := make([]*Assignment, 0, len(resp.Kvs))
	next := make(map[string]*Assignment, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		a := c.byKey[string(kv.Key)]
		if a == nil || a.ModRevision != kv.ModRevision {
			if a, err = decodeAssignment(kv.Key, kv.Value, kv.ModRevision); err != nil {
				return nil, 0, err
			}
		}
		next[a.Key] = a
		out = append(out, a)
	}
	c.byKey = next
	return out, resp.Header.Revision, nil
}

func decodeAssignment(key, value []byte, rev int64) (*Assignment, error) {
	a := &pb.PipelineAssignment{}
	if err := unmarshal.Unmarshal(value, a); err != nil {
		return nil, fmt.Errorf("store: decode %s: %w", key, err)
	}
	return &Assignment{Record: a, Key: string(key), ModRevision: rev}, nil
}

// AssignmentEvent is one change of a member's assignments: Assignment is
// nil for a deletion, and then Key names what went.
type AssignmentEvent struct {
	Key        string
	Assignment *Assignment
}

// WatchAssignments streams the changes of a member's assignments after
// revision rev (from Assignments) until ctx ends. A watch that fails
// (compacted, etcd gone) ends with an error: the caller lists again.
func (s *Store) WatchAssignments(ctx context.Context, member string, rev int64, fn func([]AssignmentEvent) error) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for wr := range s.cli.Watch(wctx, s.keys.AssignmentPrefix(member), clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
		if err := wr.Err(); err != nil {
			return etcdErr("watch assignments", err)
		}
		evs := make([]AssignmentEvent, 0, len(wr.Events))
		for _, ev := range wr.Events {
			e := AssignmentEvent{Key: string(ev.Kv.Key)}
			if ev.Type == clientv3.EventTypePut {
				a, err := decodeAssignment(ev.Kv.Key, ev.Kv.Value, ev.Kv.ModRevision)
				if err != nil {
					return err
				}
				e.Assignment = a
			}
			evs = append(evs, e)
		}
		if err := fn(evs); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("store: watch assignments ended: %w", cdcerr.ErrUnavailable)
}

// ProgressWrite is one pipeline's progress, fenced on the assignment its
// producer runs.
type ProgressWrite struct {
	Assignment *Assignment
	Status     *pb.PipelineStatus
}

// maxTxnPipelines bounds one progress transaction: two operations a
// pipeline stay under etcd's default --max-txn-ops of 128.
const maxTxnPipelines = 64

// WriteProgress writes the progress of many pipelines in as few
// transactions as etcd allows, each fenced on the mod revision of the
// assignment it was made under. A pipeline whose assignment moved on (a
// new epoch, another producer, removed) is not written and comes back in
// fenced: its producer is a zombie for it and must stop it. The others are
// written even when some of their batch were fenced.
func (s *Store) WriteProgress(ctx context.Context, writes []ProgressWrite) (fenced []ProgressWrite, err error) {
	for len(writes) > 0 {
		n := min(len(writes), maxTxnPipelines)
		batch := writes[:n]
		writes = writes[n:]
		for len(batch) > 0 {
			lost, err := s.writeProgressBatch(ctx, batch)
			if err != nil {
				return fenced, err
			}
			if len(lost) == 0 {
				break
			}
			fenced = append(fenced, lost...)
			batch = without(batch, lost)
		}
	}
	return fenced, nil
}

// writeProgressBatch tries one transaction; when a fence fails it writes
// nothing and returns the writes whose assignment changed.
func (s *Store) writeProgressBatch(ctx context.Context, batch []ProgressWrite) ([]ProgressWrite, error) {
	cmps := make([]clientv3.Cmp, 0, len(batch))
	puts := make([]clientv3.Op, 0, len(batch))
	gets := make([]clientv3.Op, 0, len(batch))
	for _, w := range batch {
		a := w.Assignment.Record
		ns := a.GetNamespace()
		if ns == "" {
			ns = DefaultNamespace
		}
		b, err := marshal.Marshal(w.Status)
		if err != nil {
			return nil, fmt.Errorf("store: encode progress of pipeline %d: %w", a.GetPipelineId(), err)
		}
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(w.Assignment.Key), "=", w.Assignment.ModRevision))
		puts = append(puts, clientv3.OpPut(s.keys.Progress(ns, a.GetChangefeedId(), a.GetPipelineId()), string(b)))
		gets = append(gets, clientv3.OpGet(w.Assignment.Key, clientv3.WithKeysOnly()))
	}
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(puts...).Else(gets...).Commit()
	if err != nil {
		return nil, etcdErr("write progress", err)
	}
	if resp.Succeeded {
		return nil, nil
	}
	var lost []ProgressWrite
	for i, r := range resp.Responses {
		kvs := r.GetResponseRange().GetKvs()
		if len(kvs) == 0 || kvs[0].ModRevision != batch[i].Assignment.ModRevision {
			lost = append(lost, batch[i])
		}
	}
	if len(lost) == 0 {
		// The Else reads run at the revision the compares failed at, so one
		// of them shows the change; not finding it is a bug here.
		return nil, fmt.Errorf("store: progress write refused but no assignment of the batch changed")
	}
	return lost, nil
}

func without(batch, lost []ProgressWrite) []ProgressWrite {
	out := make([]ProgressWrite, 0, len(batch)-len(lost))
	for _, w := range batch {
		drop := false
		for _, l := range lost {
			if l.Assignment == w.Assignment {
				drop = true
				break
			}
		}
		if !drop {
			out = append(out, w)
		}
	}
	return out
}

// PipelineProgress reads the progress records of one changefeed, by
// pipeline id.
func (s *Store) PipelineProgress(ctx context.Context, namespace, changefeed string) (map[int64]*pb.PipelineStatus, error) {
	prefix := s.keys.ProgressPrefix(namespace, changefeed)
	resp, err := s.cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, etcdErr("read progress", err)
	}
	out := make(map[int64]*pb.PipelineStatus, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		id, err := strconv.ParseInt(strings.TrimPrefix(string(kv.Key), prefix), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("store: progress key %s: %w", kv.Key, err)
		}
		st := &pb.PipelineStatus{}
		if err := unmarshal.Unmarshal(kv.Value, st); err != nil {
			return nil, fmt.Errorf("store: decode %s: %w", kv.Key, err)
		}
		out[id] = st
	}
	return out, nil
}

// AssignmentOp is one change of the owner's placement: Put a record (From
// as in Assign), or Delete the record of a pipeline that stopped.
type AssignmentOp struct {
	Put    *pb.PipelineAssignment
	From   string
	Delete *pb.PipelineAssignment
}

// assignOpsPerTxn keeps a transaction of assignment ops (a put and a
// delete each at most) under etcd's default --max-txn-ops of 128.
const assignOpsPerTxn = 60

// ApplyAssignments makes ops under the owner's fence, in as few
// transactions as etcd allows, in order. A placement of 10k pipelines is
// then a few hundred writes, not 10k. It stops at the first transaction
// that fails; what earlier ones wrote stays, which is safe: every record is
// complete on its own, and the owner's next round plans from what is
// there.
func (s *Store) ApplyAssignments(ctx context.Context, fence Fence, ops []AssignmentOp) error {
	if !fence.active() {
		return fmt.Errorf("store: %d assignment changes without an owner fence", len(ops))
	}
	for len(ops) > 0 {
		n := min(len(ops), assignOpsPerTxn)
		var txn []clientv3.Op
		for _, op := range ops[:n] {
			eops, err := s.assignmentOps(op)
			if err != nil {
				return err
			}
			txn = append(txn, eops...)
		}
		resp, err := s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(fence.Key), "=", fence.Rev)).
			Then(txn...).
			Commit()
		if err != nil {
			return etcdErr("apply assignments", err)
		}
		if !resp.Succeeded {
			return fmt.Errorf("store: assignment changes refused, owner key %s lost: %w", fence.Key, cdcerr.ErrNotOwner)
		}
		ops = ops[n:]
	}
	return nil
}

func (s *Store) assignmentOps(op AssignmentOp) ([]clientv3.Op, error) {
	if d := op.Delete; d != nil {
		if op.Put != nil {
			return nil, fmt.Errorf("store: assignment change of pipeline %d both puts and deletes", d.GetPipelineId())
		}
		return []clientv3.Op{clientv3.OpDelete(s.keys.Assignment(d.GetProducerMember(), NamespaceOr(d.GetNamespace()), d.GetChangefeedId(), d.GetPipelineId()))}, nil
	}
	a := op.Put
	if a == nil {
		return nil, errors.New("store: empty assignment change")
	}
	if a.GetProducerMember() == "" || a.GetChangefeedId() == "" || a.GetEpoch() == 0 {
		return nil, fmt.Errorf("store: assignment of pipeline %d: producer member, changefeed and a positive epoch are required", a.GetPipelineId())
	}
	b, err := marshal.Marshal(a)
	if err != nil {
		return nil, fmt.Errorf("store: encode assignment of pipeline %d: %w", a.GetPipelineId(), err)
	}
	ns := NamespaceOr(a.GetNamespace())
	out := []clientv3.Op{clientv3.OpPut(s.keys.Assignment(a.GetProducerMember(), ns, a.GetChangefeedId(), a.GetPipelineId()), string(b))}
	if op.From != "" && op.From != a.GetProducerMember() {
		out = append(out, clientv3.OpDelete(s.keys.Assignment(op.From, ns, a.GetChangefeedId(), a.GetPipelineId())))
	}
	return out, nil
}

// NamespaceOr is ns, or the default namespace for "".
func NamespaceOr(ns string) string {
	if ns == "" {
		return DefaultNamespace
	}
	return ns
}

// Reached is how far a pipeline got by its records. Its progress record
// counts only when written under the assignment's epoch: one of an earlier
// epoch was made by a run that has been replaced, and the new run restarts
// at the assignment's start ts, so that is where it stands until it
// reports. Neither figure is ever below the start ts. counted says whether
// st counted (so its error is the pipeline's now).
func Reached(a *pb.PipelineAssignment, st *pb.PipelineStatus) (checkpoint, resolved uint64, counted bool) {
	checkpoint, resolved = a.GetStartTs(), a.GetStartTs()
	if st == nil || st.GetEpoch() != a.GetEpoch() {
		return checkpoint, resolved, false
	}
	return max(checkpoint, st.GetCheckpointTs()), max(resolved, st.GetResolvedTs()), true
}

// PipelineRef names a pipeline across changefeeds.
type PipelineRef struct {
	Namespace, Changefeed string
	Pipeline              int64
}

// AllProgress reads every pipeline's progress record, of every changefeed.
func (s *Store) AllProgress(ctx context.Context) (map[PipelineRef]*pb.PipelineStatus, error) {
	prefix := s.keys.prefix + "/progress/"
	resp, err := s.cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, etcdErr("read progress", err)
	}
	out := make(map[PipelineRef]*pb.PipelineStatus, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		parts := strings.Split(strings.TrimPrefix(string(kv.Key), prefix), "/")
		if len(parts) != 3 {
			return nil, fmt.Errorf("store: progress key %s: want <namespace>/<changefeed>/<pipeline>", kv.Key)
		}
		id, err := strconv.ParseInt(parts[2], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("store: progress key %s: %w", kv.Key, err)
		}
		st := &pb.PipelineStatus{}
		if err := unmarshal.Unmarshal(kv.Value, st); err != nil {
			return nil, fmt.Errorf("store: decode %s: %w", kv.Key, err)
		}
		out[PipelineRef{parts[0], parts[1], id}] = st
	}
	return out, nil
}

// DeleteProgress deletes the progress records of one changefeed under the
// owner's fence: once its pipelines are unassigned (paused, finished,
// failed, removed), so that a later run cannot mistake them for its own.
func (s *Store) DeleteProgress(ctx context.Context, fence Fence, namespace, changefeed string) error {
	if !fence.active() {
		return fmt.Errorf("store: deleting progress of %s/%s without an owner fence", namespace, changefeed)
	}
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(fence.Key), "=", fence.Rev)).
		Then(clientv3.OpDelete(s.keys.ProgressPrefix(NamespaceOr(namespace), changefeed), clientv3.WithPrefix())).
		Commit()
	if err != nil {
		return etcdErr("delete progress", err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("store: deleting progress of %s/%s refused, owner key %s lost: %w", namespace, changefeed, fence.Key, cdcerr.ErrNotOwner)
	}
	return nil
}

// ChangefeedAssignments lists the assignments of one changefeed, whichever
// producer members hold them, as of one revision.
//
// Assignment keys are grouped by producer member (KEYS.md), so there is no
// prefix to read one changefeed by. Rather than read every assignment of
// the cluster (100k records at scale, for one changefeed's few), it skips
// from member to member: a keys-only read of one key finds the next member
// holding any assignment, a prefix read takes that member's records of the
// changefeed, and the next search starts past the member. That is two small
// reads per producer member, members whose session expired included: their
// records stay until the owner moves them, and are where the changefeed's
// pipelines stand. Every read is at the revision of the first, so a
// pipeline moving between members meanwhile is seen exactly once.
func (s *Store) ChangefeedAssignments(ctx context.Context, namespace, changefeed string) ([]*Assignment, error) {
	namespace = NamespaceOr(namespace)
	base := s.keys.AssignmentPrefix("")
	var out []*Assignment
	from, rev := base, int64(0)
	for {
		key, r, err := s.firstKey(ctx, from, clientv3.GetPrefixRangeEnd(base), rev)
		if err != nil || key == "" {
			return out, err
		}
		rev = r
		member, _, _ := strings.Cut(strings.TrimPrefix(key, base), "/")
		if member == "" {
			from = key + "\x00" // not a key this package writes: step over it
			continue
		}
		resp, err := s.cli.Get(ctx, s.keys.AssignmentPrefix(member)+namespace+"/"+changefeed+"/", clientv3.WithPrefix(), clientv3.WithRev(rev))
		if err != nil {
			return nil, etcdErr("list assignments of "+namespace+"/"+changefeed, err)
		}
		for _, kv := range resp.Kvs {
			a, err := decodeAssignment(kv.Key, kv.Value, kv.ModRevision)
			if err != nil {
				return nil, err
			}
			out = append(out, a)
		}
		// Past every key of the member: <base><member>/… ends before
		// <base><member>0 ('0' follows '/').
		from = clientv3.GetPrefixRangeEnd(s.keys.AssignmentPrefix(member))
	}
}

// Placement is one changefeed placed on one producer member (TiCDC's
// processor): the member holds at least one of its assignments.
type Placement struct {
	Member, Namespace, Changefeed string
}

// Placements lists every (producer member, changefeed) pair with at least
// one assignment, in key order, as of one revision. Like
// ChangefeedAssignments it skips rather than scans: one keys-only read of
// one key per pair, so its cost follows the pairs (members × changefeeds),
// not the pipelines.
func (s *Store) Placements(ctx context.Context) ([]Placement, error) {
	base := s.keys.AssignmentPrefix("")
	var out []Placement
	from, rev := base, int64(0)
	for {
		key, r, err := s.firstKey(ctx, from, clientv3.GetPrefixRangeEnd(base), rev)
		if err != nil || key == "" {
			return out, err
		}
		rev = r
		member, ns, cf, _, ok := s.keys.ParseAssignment(key)
		if !ok {
			from = key + "\x00" // not a key this package writes: step over it
			continue
		}
		out = append(out, Placement{Member: member, Namespace: ns, Changefeed: cf})
		from = clientv3.GetPrefixRangeEnd(s.keys.AssignmentPrefix(member) + ns + "/" + cf + "/")
	}
}

// firstKey returns the first key in [from, end) at revision rev (0: the
// current one, returned for the next calls), or "" when there is none.
func (s *Store) firstKey(ctx context.Context, from, end string, rev int64) (string, int64, error) {
	opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(1), clientv3.WithKeysOnly()}
	if rev != 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	resp, err := s.cli.Get(ctx, from, opts...)
	if err != nil {
		return "", 0, etcdErr("list assignment keys", err)
	}
	if rev == 0 {
		rev = resp.Header.Revision
	}
	if len(resp.Kvs) == 0 {
		return "", rev, nil
	}
	return string(resp.Kvs[0].Key), rev, nil
}
