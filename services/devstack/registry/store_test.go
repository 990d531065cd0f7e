package registry_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"

	"github.com/tidestream/tidestream/services/devstack/registry"
)

// baseReordered is base with other whitespace and key order: the same
// schema by the registry's equality (the same JSON value).
const baseReordered = `{ "fields": [ {"type":"int", "name":"id"}, {"name":"d","type":"int"} ],
	"name": "t", "type": "record" }`

// TestSameSchemaSharesOneID: ids are global, versions per subject; the
// same schema, however laid out, is one id under every subject.
func TestSameSchemaSharesOneID(t *testing.T) {
	f := newFixture(t, registry.Config{})
	ctx := context.Background()
	a1, err := f.register(t, "a-value", base)
	require.NoError(t, err)
	a2, err := f.register(t, "a-value", addOptional)
	require.NoError(t, err)
	require.NotEqual(t, a1, a2)

	b1, err := f.register(t, "b-value", addOptional)
	require.NoError(t, err)
	require.Equal(t, a2, b1, "a schema another subject has keeps its id")
	b2, err := f.register(t, "b-value", addOptional)
	require.NoError(t, err)
	require.Equal(t, b1, b2)
	c1, err := f.register(t, "c-value", baseReordered)
	require.NoError(t, err)
	require.Equal(t, a1, c1, "layout and key order do not make a new schema")

	ss, err := f.cl.SchemaByVersion(ctx, "b-value", 1)
	require.NoError(t, err)
	require.Equal(t, sr.SubjectSchema{Subject: "b-value", Version: 1, ID: a2, GUID: ss.GUID, Schema: avro(addOptional)}, ss)
	latest, err := f.cl.SchemaByVersion(ctx, "a-value", -1)
	require.NoError(t, err)
	require.Equal(t, 2, latest.Version)
	require.Equal(t, ss.GUID, latest.GUID, "the GUID follows the content")

	c, err := f.cl.SchemaByVersion(ctx, "c-value", 1)
	require.NoError(t, err)
	require.Equal(t, baseReordered, c.Schema.Schema, "a version keeps the text it was registered with")
	byID, err := f.cl.SchemaByID(ctx, a1)
	require.NoError(t, err)
	require.Equal(t, base, byID.Schema, "an id keeps the text it was first registered with")

	subjects, err := f.cl.SubjectsByID(ctx, a2)
	require.NoError(t, err)
	require.Equal(t, []string{"a-value", "b-value"}, subjects)
	uses, err := f.cl.SchemaVersionsByID(ctx, a1)
	require.NoError(t, err)
	require.Len(t, uses, 2)

	status, _ := f.raw(t, http.MethodGet, "/schemas/ids/"+strconv.Itoa(a2)+"?subject=b-value", "", nil)
	require.Equal(t, http.StatusOK, status)
	status, body := f.raw(t, http.MethodGet, "/schemas/ids/"+strconv.Itoa(a2)+"?subject=c-value", "", nil)
	require.Equal(t, http.StatusNotFound, status, "c-value does not use the id")
	require.Contains(t, body, `"error_code":40403`)

	text, err := f.cl.SchemaTextByID(ctx, a1)
	require.NoError(t, err)
	require.Equal(t, base, text)
	text, err = f.cl.SchemaTextByVersion(ctx, "c-value", 1)
	require.NoError(t, err)
	require.Equal(t, baseReordered, text)

	got, err := f.cl.LookupSchema(ctx, "c-value", avro(base))
	require.NoError(t, err)
	require.Equal(t, a1, got.ID)
	require.Equal(t, 1, got.Version)
	_, err = f.cl.LookupSchema(ctx, "c-value", avro(addOptional))
	require.Equal(t, sr.ErrSchemaNotFound.Code, responseError(t, err).ErrorCode)
	_, err = f.cl.LookupSchema(ctx, "nosuch", avro(base))
	require.Equal(t, sr.ErrSubjectNotFound.Code, responseError(t, err).ErrorCode)

	byGUID, err := f.cl.SchemaByGUID(ctx, ss.GUID)
	require.NoError(t, err)
	require.Equal(t, a2, byGUID.ID)
	require.Equal(t, "a-value", byGUID.Subject)

	all, err := f.cl.AllSchemas(ctx)
	require.NoError(t, err)
	require.Len(t, all, 4)
	names, err := f.cl.Subjects(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"a-value", "b-value", "c-value"}, names)
}

// TestDeleteThenRegisterAgain: version numbers never come back, ids never
// go away, a soft-deleted subject refuses registrations until it is
// permanently deleted.
func TestDeleteThenRegisterAgain(t *testing.T) {
	f := newFixture(t, registry.Config{GlobalLevel: sr.CompatNone})
	ctx := context.Background()
	id1, err := f.register(t, "t-value", base)
	require.NoError(t, err)
	id2, err := f.register(t, "t-value", retype)
	require.NoError(t, err)

	require.NoError(t, f.cl.DeleteSchema(ctx, "t-value", 2, sr.SoftDelete))
	versions, err := f.cl.SubjectVersions(ctx, "t-value")
	require.NoError(t, err)
	require.Equal(t, []int{1}, versions)
	latest, err := f.cl.SchemaByVersion(ctx, "t-value", -1)
	require.NoError(t, err)
	require.Equal(t, 1, latest.Version)
	_, err = f.cl.SchemaByVersion(ctx, "t-value", 2)
	require.Equal(t, sr.ErrVersionNotFound.Code, responseError(t, err).ErrorCode)
	old, err := f.cl.SchemaByVersion(sr.WithParams(ctx, sr.ShowDeleted), "t-value", 2)
	require.NoError(t, err)
	require.Equal(t, id2, old.ID)
	_, err = f.cl.LookupSchema(ctx, "t-value", avro(retype))
	require.Equal(t, sr.ErrSchemaNotFound.Code, responseError(t, err).ErrorCode)
	found, err := f.cl.LookupSchema(sr.WithParams(ctx, sr.ShowDeleted), "t-value", avro(retype))
	require.NoError(t, err)
	require.Equal(t, 2, found.Version)

	// The soft-deleted schema comes back as a new version, same id.
	again, err := f.register(t, "t-value", retype)
	require.NoError(t, err)
	require.Equal(t, id2, again)
	versions, err = f.cl.SubjectVersions(ctx, "t-value")
	require.NoError(t, err)
	require.Equal(t, []int{1, 3}, versions)

	// Permanently deleting the latest does not free its number.
	require.NoError(t, f.cl.DeleteSchema(ctx, "t-value", 3, sr.HardDelete))
	again, err = f.register(t, "t-value", addOptional)
	require.NoError(t, err)
	v, err := f.cl.LookupSchema(ctx, "t-value", avro(addOptional))
	require.NoError(t, err)
	require.Equal(t, sr.SubjectSchema{Subject: "t-value", Version: 4, ID: again, GUID: v.GUID, Schema: avro(addOptional)}, v)

	// A soft-deleted subject is hidden and refuses registrations.
	deleted, err := f.cl.DeleteSubject(ctx, "t-value", sr.SoftDelete)
	require.NoError(t, err)
	require.Equal(t, []int{1, 2, 4}, deleted)
	_, err = f.cl.SubjectVersions(ctx, "t-value")
	require.Equal(t, sr.ErrSubjectNotFound.Code, responseError(t, err).ErrorCode)
	_, err = f.register(t, "t-value", base)
	require.Equal(t, sr.ErrSubjectNotFound.Code, responseError(t, err).ErrorCode)
	names, err := f.cl.Subjects(sr.WithParams(ctx, sr.ShowDeleted))
	require.NoError(t, err)
	require.Equal(t, []string{"t-value"}, names)
	names, err = f.cl.Subjects(ctx)
	require.NoError(t, err)
	require.Empty(t, names)
	// The id outlives its subject's visibility.
	byID, err := f.cl.SchemaByID(ctx, id1)
	require.NoError(t, err)
	require.Equal(t, base, byID.Schema)

	// After a permanent delete the subject starts again at version 1,
	// and known schemas keep their ids.
	_, err = f.cl.DeleteSubject(ctx, "t-value", sr.HardDelete)
	require.NoError(t, err)
	id, err := f.register(t, "t-value", retype)
	require.NoError(t, err)
	require.Equal(t, id2, id)
	versions, err = f.cl.SubjectVersions(ctx, "t-value")
	require.NoError(t, err)
	require.Equal(t, []int{1}, versions)
	id, err = f.register(t, "u-value", dropRequired)
	require.NoError(t, err)
	require.Equal(t, again+1, id, "a new schema gets the next id, never a freed one")
}

// TestReferencedVersionsCannotBeDeleted: a version a live schema names is
// pinned; once the referrer is gone it can be deleted.
func TestReferencedVersionsCannotBeDeleted(t *testing.T) {
	f := newFixture(t, registry.Config{})
	ctx := context.Background()
	addr, err := f.register(t, "address-value", `{"type":"record","name":"Address","namespace":"ex","fields":[{"name":"city","type":"string"}]}`)
	require.NoError(t, err)
	user := sr.Schema{
		Schema:     `{"type":"record","name":"User","namespace":"ex","fields":[{"name":"home","type":"ex.Address"}]}`,
		References: []sr.SchemaReference{{Name: "ex.Address", Subject: "address-value", Version: 1}},
	}
	uid, err := f.cl.RegisterSchema(ctx, "user-value", user, -1, -1)
	require.NoError(t, err)
	require.NotEqual(t, addr, uid)
	again, err := f.cl.RegisterSchema(ctx, "user-value", user, -1, -1)
	require.NoError(t, err)
	require.Equal(t, uid, again)

	by, err := f.cl.SchemaReferences(ctx, "address-value", 1)
	require.NoError(t, err)
	require.Len(t, by, 1)
	require.Equal(t, uid, by[0].ID)

	_, err = f.cl.DeleteSubject(ctx, "address-value", sr.SoftDelete)
	require.Equal(t, http.StatusConflict, responseError(t, err).StatusCode)
	err = f.cl.DeleteSchema(ctx, "address-value", 1, sr.SoftDelete)
	require.Equal(t, http.StatusConflict, responseError(t, err).StatusCode)

	// A reference to a missing version, or to its own subject, is refused.
	bad := user
	bad.References = []sr.SchemaReference{{Name: "ex.Address", Subject: "address-value", Version: 9}}
	_, err = f.cl.RegisterSchema(ctx, "other-value", bad, -1, -1)
	require.Equal(t, sr.ErrInvalidSchema.Code, responseError(t, err).ErrorCode)

	_, err = f.cl.DeleteSubject(ctx, "user-value", sr.SoftDelete)
	require.NoError(t, err)
	_, err = f.cl.DeleteSubject(ctx, "address-value", sr.SoftDelete)
	require.NoError(t, err)
}

func TestModesAndContexts(t *testing.T) {
	f := newFixture(t, registry.Config{})
	ctx := context.Background()
	res := f.cl.Mode(ctx)
	require.NoError(t, res[0].Err)
	require.Equal(t, sr.ModeReadWrite, res[0].Mode)
	res = f.cl.SetMode(ctx, sr.ModeReadOnly, "t-value")
	require.NoError(t, res[0].Err)
	res = f.cl.Mode(ctx, "t-value", "u-value")
	require.Equal(t, sr.ModeReadOnly, res[0].Mode)
	require.Equal(t, sr.ModeReadWrite, res[1].Mode, "no mode of its own: the global one")
	names, err := f.cl.Subjects(ctx)
	require.NoError(t, err)
	require.Empty(t, names, "a mode alone does not make a subject")
	res = f.cl.ResetMode(ctx, "t-value")
	require.NoError(t, res[0].Err)
	require.Equal(t, sr.ModeReadOnly, res[0].Mode)
	status, body := f.raw(t, http.MethodPut, "/mode", `{"mode":"SIDEWAYS"}`, nil)
	require.Equal(t, http.StatusUnprocessableEntity, status)
	require.Contains(t, body, `"error_code":42204`)

	_, err = f.register(t, ":.tenant:t-value", base)
	require.NoError(t, err)
	id, err := f.register(t, "u-value", addOptional)
	require.NoError(t, err)
	contexts, err := f.cl.Contexts(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{".", ".tenant"}, contexts)
	status, body = f.raw(t, http.MethodGet, "/contexts/.tenant/subjects", "", nil)
	require.Equal(t, http.StatusOK, status)
	require.JSONEq(t, `[":.tenant:t-value"]`, body)
	status, _ = f.raw(t, http.MethodGet, "/contexts/.tenant/schemas/ids/"+strconv.Itoa(id), "", nil)
	require.Equal(t, http.StatusNotFound, status, "u-value's id is not in .tenant")
	status, _ = f.raw(t, http.MethodDelete, "/contexts/.tenant", "", nil)
	require.Equal(t, http.StatusConflict, status)
}

// TestMatchesSrfake runs random registrations and deletes against the
// registry and against srfake, the store it replaced, and requires the same
// ids, versions and refusals. Level NONE: srfake checks no compatibility.
// Where the two deliberately differ (a read of a soft-deleted subject:
// srfake says version not found, Confluent and we say subject not found)
// only success or failure is compared.
func TestMatchesSrfake(t *testing.T) {
	schemas := []string{base, baseReordered, addOptional, addRequired, dropRequired, widen, retype}
	subjects := []string{"a-value", "b-value", "c-key"}
	for seed := range uint64(8) {
		t.Run(strconv.FormatUint(seed, 10), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 1))
			ours := newFixture(t, registry.Config{GlobalLevel: sr.CompatNone})
			theirs, err := sr.NewClient(sr.URLs("http://srfake.invalid"),
				sr.HTTPClient(&http.Client{Transport: inProcess{srfake.NewRegistry().Handler()}}))
			require.NoError(t, err)
			ctx := context.Background()
			code := func(err error) int {
				if err == nil {
					return 0
				}
				return responseError(t, err).ErrorCode
			}
			for step := range 200 {
				subject := subjects[rng.IntN(len(subjects))]
				schema := avro(schemas[rng.IntN(len(schemas))])
				what := fmt.Sprintf("step %d", step)
				switch op := rng.IntN(10); {
				case op < 5:
					a, errA := ours.cl.RegisterSchema(ctx, subject, schema, -1, -1)
					b, errB := theirs.RegisterSchema(ctx, subject, schema, -1, -1)
					require.Equal(t, code(errB), code(errA), "%s: register %s: %v / %v", what, subject, errA, errB)
					require.Equal(t, b, a, "%s: register %s", what, subject)
				case op < 7:
					n := 1 + rng.IntN(4)
					how := sr.DeleteHow(rng.IntN(2) == 1)
					errA := ours.cl.DeleteSchema(ctx, subject, n, how)
					errB := theirs.DeleteSchema(ctx, subject, n, how)
					require.Equal(t, code(errB), code(errA), "%s: delete %s %d: %v / %v", what, subject, n, errA, errB)
				case op < 8:
					how := sr.DeleteHow(rng.IntN(2) == 1)
					a, errA := ours.cl.DeleteSubject(ctx, subject, how)
					b, errB := theirs.DeleteSubject(ctx, subject, how)
					require.Equal(t, code(errB), code(errA), "%s: delete %s: %v / %v", what, subject, errA, errB)
					require.Equal(t, len(b), len(a), "%s: delete %s", what, subject)
				default:
					for i, rctx := range []context.Context{ctx, sr.WithParams(ctx, sr.ShowDeleted)} {
						what := fmt.Sprintf("%s (deleted=%v)", what, i == 1)
						va, errA := ours.cl.SubjectVersions(rctx, subject)
						vb, errB := theirs.SubjectVersions(rctx, subject)
						require.Equal(t, code(errB), code(errA), "%s: versions %s", what, subject)
						require.ElementsMatch(t, vb, va, "%s: versions %s", what, subject)
						a, errA := ours.cl.SchemaByVersion(rctx, subject, -1)
						b, errB := theirs.SchemaByVersion(rctx, subject, -1)
						if i == 1 && errA == nil && code(errB) == sr.ErrVersionNotFound.Code {
							// No live version and the highest was permanently
							// deleted: srfake looks for that one, we answer the
							// highest soft-deleted version left.
							require.Equal(t, slices.Max(va), a.Version, "%s: latest %s", what, subject)
							continue
						}
						require.Equal(t, errB == nil, errA == nil, "%s: latest %s: %v / %v", what, subject, errA, errB)
						require.Equal(t, b.ID, a.ID, "%s: latest %s", what, subject)
						require.Equal(t, b.Version, a.Version, "%s: latest %s", what, subject)
						la, errA := ours.cl.LookupSchema(rctx, subject, schema)
						lb, errB := theirs.LookupSchema(rctx, subject, schema)
						require.Equal(t, code(errB), code(errA), "%s: lookup %s: %v / %v", what, subject, errA, errB)
						require.Equal(t, lb.ID, la.ID, "%s: lookup %s", what, subject)
					}
				}
			}
		})
	}
}
