module github.com/tidestream/tidestream/encoder

go 1.26.0

replace github.com/tidestream/tidestream/proto => ../proto
