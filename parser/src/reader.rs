//! [`LogReader`]: the one loop that drives a [`Decoder`] over a byte stream, as arrow-csv pairs
//! its push `Decoder` with a `BufReader`. Ingest, diagnose, the tests, the fuzz harness and the
//! benches all read through it, so the flush rules (a batch is taken whenever the decoder asks,
//! the last one only if it holds rows) are written once.
//!
//! It reads through [`BufRead`], so the decoder parses straight out of the reader's buffer: a
//! `&[u8]` is decoded in place with no copy, a file through a `BufReader` of any capacity (which
//! is also how tests feed the same bytes in chunks of every size).

use std::io::{BufRead, ErrorKind};

use crate::{Decoder, Error, Flushed};

/// Where the reader is in its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Reading,
    /// The input ended: finish the decoder and take the last batch.
    Ended,
    Done,
}

/// A [`Decoder`] fed from a [`BufRead`]: an iterator of [`Flushed`] batches, in input order.
///
/// At the end of the input an unterminated last line is parsed as complete
/// ([`Decoder::finish`]); a file that is still being written must not be read to its end this
/// way. An I/O error ends the iteration after it is returned.
///
/// ```
/// use mailflow_parser::{DecoderBuilder, LogReader};
///
/// # fn main() -> Result<(), mailflow_parser::Error> {
/// let log: &[u8] = b"#Software: Microsoft Exchange Server\r\n\
/// #Log-type: SMTP Send Protocol Log\r\n\
/// #Fields: date-time,connector-id,session-id,sequence-number,local-endpoint,remote-endpoint,event,data,context\r\n\
/// 2024-01-25T15:14:39.460Z,Outbound,08DC1DB8591B22A0,7,10.0.0.5:41822,203.0.113.9:25,<,454 4.7.0 Temporary authentication failure,\r\n";
///
/// let decoder = DecoderBuilder::new("EX01/SmtpSend/SEND2024012515-1.LOG").build();
/// let mut rows = 0;
/// for flushed in LogReader::new(decoder, log) {
///     rows += flushed?.data.map_or(0, |d| d.batch.num_rows());
/// }
/// assert_eq!(rows, 1);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct LogReader<R> {
    decoder: Decoder,
    reader: R,
    state: State,
}

impl<R: BufRead> LogReader<R> {
    /// Reads `reader` to its end through `decoder`.
    pub fn new(decoder: Decoder, reader: R) -> Self {
        LogReader {
            decoder,
            reader,
            state: State::Reading,
        }
    }

    /// The decoder, for its counters and notes.
    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// The decoder, e.g. to hand its learned batch sizes to the next file's decoder.
    pub fn decoder_mut(&mut self) -> &mut Decoder {
        &mut self.decoder
    }

    /// The decoder and the reader back.
    pub fn into_parts(self) -> (Decoder, R) {
        (self.decoder, self.reader)
    }

    fn step(&mut self) -> Result<Option<Flushed>, Error> {
        loop {
            match self.state {
                State::Done => return Ok(None),
                State::Ended => {
                    self.state = State::Done;
                    self.decoder.finish()?;
                    let last = self.decoder.flush()?;
                    let any = last.data.is_some() || last.rejects.is_some();
                    return Ok(any.then_some(last));
                }
                State::Reading => {
                    if self.decoder.needs_flush() {
                        return self.decoder.flush().map(Some);
                    }
                    let buf = match self.reader.fill_buf() {
                        Ok(buf) => buf,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(e) => {
                            self.state = State::Done;
                            return Err(e.into());
                        }
                    };
                    if buf.is_empty() {
                        self.state = State::Ended;
                        continue;
                    }
                    // `decode` uses every byte unless a flush is due first, so each turn of
                    // this loop either consumes input or takes a batch.
                    let used = self.decoder.decode(buf)?;
                    debug_assert!(
                        used > 0 || self.decoder.needs_flush(),
                        "decode made no progress"
                    );
                    self.reader.consume(used);
                }
            }
        }
    }
}

impl<R: BufRead> Iterator for LogReader<R> {
    type Item = Result<Flushed, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.step() {
            Ok(f) => f.map(Ok),
            Err(e) => {
                self.state = State::Done;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::BufReader;

    use super::*;
    use crate::DecoderBuilder;

    const LOG: &[u8] = b"#Software: Microsoft Exchange Server\r\n\
#Log-type: SMTP Receive Protocol Log\r\n\
#Fields: date-time,connector-id,session-id,sequence-number,local-endpoint,remote-endpoint,event,data,context\r\n\
2024-01-25T15:14:39.460Z,EX01\\Default,08DC1DB8591B22A0,0,10.0.0.5:25,203.0.113.9:41822,+,,\r\n\
2024-01-25T15:14:39.461Z,EX01\\Default,08DC1DB8591B22A0,1,10.0.0.5:25,203.0.113.9:41822,<,EHLO mx.example.org,\r\n\
not a row\r\n\
2024-01-25T15:14:39.462Z,EX01\\Default,08DC1DB8591B22A0,2,10.0.0.5:25,203.0.113.9:41822,-,,Local\r\n\
2024-01-25T15:14:39.463Z,EX01\\Default,08DC1DB8591B22A0,3,10.0.0.5:25,203.0.113.9:41822,>,220 ok,";

    /// (rows, rejects, batches, the last batch's end offset).
    fn read(chunk: usize, batch: usize) -> (usize, usize, usize, u64) {
        let decoder = DecoderBuilder::new("EX01/RECV2024012515-1.LOG")
            .with_batch_size(batch)
            .build();
        let (mut rows, mut rejects, mut batches, mut end) = (0, 0, 0, 0);
        for f in LogReader::new(decoder, BufReader::with_capacity(chunk, LOG)) {
            let f = f.unwrap();
            rows += f.data.map_or(0, |d| d.batch.num_rows());
            rejects += f.rejects.map_or(0, |r| r.num_rows());
            batches += 1;
            end = f.end_offset;
        }
        (rows, rejects, batches, end)
    }

    #[test]
    fn every_chunking_and_batch_size_reads_the_same_rows() {
        for chunk in [1, 2, 7, 64, 4096] {
            for batch in [1, 2, 4096] {
                let (rows, rejects, batches, end) = read(chunk, batch);
                assert_eq!((rows, rejects), (4, 1), "chunk {chunk}, batch {batch}");
                // The unterminated last line is parsed at the end, and the last batch covers
                // the whole input.
                assert_eq!(end, LOG.len() as u64, "chunk {chunk}, batch {batch}");
                if batch == 1 {
                    assert_eq!(batches, 5, "one row or reject per batch");
                }
            }
        }
    }

    #[test]
    fn an_empty_input_yields_nothing() {
        let decoder = DecoderBuilder::new("EX01/RECV2024012515-1.LOG").build();
        assert_eq!(LogReader::new(decoder, &b""[..]).count(), 0);
    }

    /// A reader that fails after its first bytes.
    struct Failing(&'static [u8], bool);

    impl std::io::Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            unreachable!("read through BufRead")
        }
    }

    impl BufRead for Failing {
        fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
            if self.1 {
                Err(std::io::Error::other("disk gone"))
            } else {
                Ok(self.0)
            }
        }

        fn consume(&mut self, n: usize) {
            self.0 = &self.0[n..];
            self.1 = self.0.is_empty();
        }
    }

    #[test]
    fn an_io_error_is_returned_once_and_ends_the_reading() {
        let decoder = DecoderBuilder::new("EX01/RECV2024012515-1.LOG").build();
        let mut reader = LogReader::new(decoder, Failing(&LOG[..200], false));
        let errors: Vec<String> = reader
            .by_ref()
            .filter_map(Result::err)
            .map(|e| e.to_string())
            .collect();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("disk gone"), "{errors:?}");
        assert!(reader.next().is_none());
        // What was read before the error was decoded (the header lines).
        assert_eq!(reader.decoder().stats().bytes, 200);
    }
}
