package mount_test

import (
	"github.com/tidestream/tidestream/encoder/mount"
	"github.com/tidestream/tidestream/encoder/schema"
)

// The schema history is what mount reads tables from in the encoder.
var _ mount.Tables = (*schema.History)(nil)
