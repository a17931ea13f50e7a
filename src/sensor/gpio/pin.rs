//! The open-drain pin the 1-Wire bus needs, over an I/O pin that can switch
//! between input and output (rppal's `IoPin` on the Pi).

use std::fmt::Debug;

use embedded_hal::digital::v2::{InputPin, OutputPin};

/// The I/O-pin operations an open-drain 1-Wire master needs, named after
/// rppal's `IoPin` inherent methods (which are correct, unlike its
/// embedded-hal 0.2 `is_low`).
pub trait IoPinOps {
    type Error: Debug;
    /// Switches the pin to output mode (driving its output latch).
    fn set_output(&mut self) -> Result<(), Self::Error>;
    /// Switches the pin to input mode: it stops driving the line.
    fn set_input(&mut self) -> Result<(), Self::Error>;
    /// Sets the output latch low.
    fn set_latch_low(&mut self) -> Result<(), Self::Error>;
    /// Reads the line's level: `true` is high.
    fn read_high(&self) -> Result<bool, Self::Error>;
}

/// An open-drain pin over an I/O pin: `set_low` drives the line low,
/// `set_high` releases it to the pull-up (never drives it high), and
/// `is_high` / `is_low` read the line's level.
#[derive(Debug)]
pub struct OpenDrain<P>(P);

impl<P: IoPinOps> OpenDrain<P> {
    /// Takes the pin, released (input).
    pub fn new(mut pin: P) -> Result<Self, P::Error> {
        pin.set_input()?;
        pin.set_latch_low()?;
        Ok(OpenDrain(pin))
    }

    pub fn into_inner(self) -> P {
        self.0
    }
}

impl<P: IoPinOps> OutputPin for OpenDrain<P> {
    type Error = P::Error;
    fn set_low(&mut self) -> Result<(), P::Error> {
        // Latch low first, so switching to output never drives high.
        self.0.set_latch_low()?;
        self.0.set_output()
    }
    fn set_high(&mut self) -> Result<(), P::Error> {
        self.0.set_input()
    }
}

impl<P: IoPinOps> InputPin for OpenDrain<P> {
    type Error = P::Error;
    fn is_high(&self) -> Result<bool, P::Error> {
        self.0.read_high()
    }
    fn is_low(&self) -> Result<bool, P::Error> {
        self.0.read_high().map(|h| !h)
    }
}

#[cfg(target_os = "linux")]
impl IoPinOps for rppal::gpio::IoPin {
    type Error = std::convert::Infallible;
    fn set_output(&mut self) -> Result<(), Self::Error> {
        self.set_mode(rppal::gpio::Mode::Output);
        Ok(())
    }
    fn set_input(&mut self) -> Result<(), Self::Error> {
        self.set_mode(rppal::gpio::Mode::Input);
        Ok(())
    }
    fn set_latch_low(&mut self) -> Result<(), Self::Error> {
        rppal::gpio::IoPin::set_low(self);
        Ok(())
    }
    fn read_high(&self) -> Result<bool, Self::Error> {
        Ok(self.read() == rppal::gpio::Level::High)
    }
}
