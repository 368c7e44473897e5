package pipeline_test

import (
	"github.com/changecast/changecast/pipeline"
	"github.com/changecast/changecast/store"
	"github.com/changecast/changecast/wsapi"
)

// The implementations of the pipeline's interfaces, and of the hub's
// journal, checked at compile time.
var (
	_ pipeline.Journal = (*store.Journal)(nil)
	_ pipeline.Writer  = (*store.Appender)(nil)
	_ pipeline.Sink    = (*wsapi.Server)(nil)
	_ wsapi.Journal    = (*store.Journal)(nil)
)
