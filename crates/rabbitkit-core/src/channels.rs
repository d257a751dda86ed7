//! The channel pool: several channels on one connection, each in confirm
//! mode, for publishing (consumers have channels of their own, with their
//! prefetch, so the pool's channels set none). A channel closed by a channel-level error
//! (404, 406, ...) is replaced on next use, without touching the connection.

use std::sync::Mutex;

use lapin::options::{BasicQosOptions, ConfirmSelectOptions};
use lapin::{Channel, Connection};

use crate::confirm::ConfirmChannel;
use crate::unconfirmed::UnconfirmedChannel;

/// One channel that re-opens itself when found closed. A confirm-mode slot
/// publishes through a [`ConfirmChannel`].
pub(crate) struct Slot {
    current: Mutex<Option<(Channel, Option<ConfirmChannel>)>>,
    replace: tokio::sync::Mutex<()>,
    confirm: bool,
    prefetch: u16,
    /// Its confirm-mode channel carries no mandatory publish (see
    /// [`ConfirmChannel::unreturnable`]).
    unreturnable: bool,
}

impl Slot {
    pub(crate) fn new(confirm: bool, prefetch: u16) -> Self {
        Self {
            current: Mutex::new(None),
            replace: tokio::sync::Mutex::new(()),
            confirm,
            prefetch,
            unreturnable: false,
        }
    }

    /// A confirm-mode slot for publishes that are never mandatory.
    fn unreturnable() -> Self {
        Self {
            unreturnable: true,
            ..Self::new(true, 0)
        }
    }

    fn confirms(&self, channel: Channel) -> ConfirmChannel {
        if self.unreturnable {
            ConfirmChannel::unreturnable(channel)
        } else {
            ConfirmChannel::new(channel)
        }
    }

    fn live(&self) -> Option<(Channel, Option<ConfirmChannel>)> {
        let guard = self.current.lock().unwrap();
        guard.as_ref().filter(|c| c.0.status().connected()).cloned()
    }

    /// The slot's confirm-mode channel when it is open now: a reference
    /// count, not a lapin `Channel` clone.
    fn live_confirming(&self) -> Option<ConfirmChannel> {
        let guard = self.current.lock().unwrap();
        guard
            .as_ref()
            .filter(|c| c.0.status().connected())
            .and_then(|c| c.1.clone())
    }

    /// Takes channel `id` out of service: the next `get` opens a new one.
    /// A confirm-mode channel is closed once its pending confirms are in
    /// (so the publishes still on it are not failed).
    pub(crate) fn retire(&self, id: u16) {
        let mut current = self.current.lock().unwrap();
        if current.as_ref().is_some_and(|c| c.0.id() == id)
            && let Some((old, confirms)) = current.take()
            && confirms.is_none()
        {
            tokio::spawn(async move {
                let _ = old.close(200, "retired".into()).await;
            });
        }
    }

    /// Takes the slot's channel out of service, whatever its state: used
    /// when a call on it got no answer in time, so the next call does not
    /// queue behind a reply that may never come. The old channel is closed
    /// in the background (bounded: the connection may not answer either).
    pub(crate) fn discard(&self, bound: std::time::Duration) {
        if let Some((old, confirms)) = self.current.lock().unwrap().take() {
            drop(confirms);
            tokio::spawn(async move {
                let _ =
                    tokio::time::timeout(bound, old.close(200, "no answer in time".into())).await;
            });
        }
    }

    /// The slot's channel, opened (again) if needed.
    pub(crate) async fn get(&self, connection: &Connection) -> Result<Channel, lapin::Error> {
        Ok(self.get_both(connection).await?.0)
    }

    /// The slot's confirm-mode channel, opened (again) if needed.
    pub(crate) async fn get_confirming(
        &self,
        connection: &Connection,
    ) -> Result<ConfirmChannel, lapin::Error> {
        let (channel, confirms) = self.get_both(connection).await?;
        Ok(confirms.unwrap_or_else(|| self.confirms(channel)))
    }

    async fn get_both(
        &self,
        connection: &Connection,
    ) -> Result<(Channel, Option<ConfirmChannel>), lapin::Error> {
        if let Some(ch) = self.live() {
            return Ok(ch);
        }
        let _one_at_a_time = self.replace.lock().await;
        if let Some(ch) = self.live() {
            return Ok(ch);
        }
        let ch = open_channel(connection, self.confirm, self.prefetch).await?;
        let confirms = self.confirm.then(|| self.confirms(ch.clone()));
        *self.current.lock().unwrap() = Some((ch.clone(), confirms.clone()));
        Ok((ch, confirms))
    }
}

/// Opens a channel, in confirm mode if asked, with `prefetch` applied (0: none).
pub(crate) async fn open_channel(
    connection: &Connection,
    confirm: bool,
    prefetch: u16,
) -> Result<Channel, lapin::Error> {
    let ch = connection.create_channel().await?;
    if prefetch > 0 {
        ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
    }
    if confirm {
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
    }
    Ok(ch)
}

/// The publishing channels of one connection.
///
/// Each slot is two channels: one for publishes that are not mandatory,
/// opened at once, on which each publish awaits its own confirm; and one for
/// mandatory publishes, opened on first use, whose confirms go through the
/// collector that matches returns to their publishes (see
/// [`ConfirmChannel`]). So a slot keeps the order of its mandatory
/// publishes and of its other publishes, each kind on its channel.
pub(crate) struct ChannelPool {
    slots: Vec<Slot>,
    mandatory: Vec<Slot>,
    /// One channel without confirm mode, opened on first use, for
    /// unconfirmed publishes.
    unconfirmed: std::sync::Mutex<Option<UnconfirmedChannel>>,
    /// Held while the unconfirmed channel is (re)opened.
    opening: tokio::sync::Mutex<()>,
    /// How many unconfirmed publishes may wait to be written.
    window: usize,
}

impl ChannelPool {
    /// Opens `count` confirm-mode channels at once (the mandatory
    /// publishes' channels are opened on first use).
    pub(crate) async fn open(
        connection: &Connection,
        count: usize,
        window: usize,
    ) -> Result<Self, lapin::Error> {
        let count = count.max(1);
        let slots: Vec<Slot> = (0..count).map(|_| Slot::unreturnable()).collect();
        for slot in &slots {
            slot.get(connection).await?;
        }
        Ok(Self {
            slots,
            mandatory: (0..count).map(|_| Slot::new(true, 0)).collect(),
            unconfirmed: std::sync::Mutex::new(None),
            opening: tokio::sync::Mutex::new(()),
            window,
        })
    }

    /// The channel of slot `index` (modulo the pool size) for publishes
    /// that are `mandatory`, or for those that are not.
    pub(crate) async fn get(
        &self,
        connection: &Connection,
        index: usize,
        mandatory: bool,
    ) -> Result<ConfirmChannel, lapin::Error> {
        let slots = if mandatory {
            &self.mandatory
        } else {
            &self.slots
        };
        slots[index % slots.len()].get_confirming(connection).await
    }

    /// The confirm-mode channel [`get`](Self::get) would give, when it is
    /// open now (no wait).
    pub(crate) fn live(&self, index: usize, mandatory: bool) -> Option<ConfirmChannel> {
        let slots = if mandatory {
            &self.mandatory
        } else {
            &self.slots
        };
        slots[index % slots.len()].live_confirming()
    }

    /// The channel without confirm mode, opened (again) if needed.
    pub(crate) async fn unconfirmed(
        &self,
        connection: &Connection,
    ) -> Result<UnconfirmedChannel, lapin::Error> {
        if let Some(channel) = self.unconfirmed_live() {
            return Ok(channel);
        }
        let _one_at_a_time = self.opening.lock().await;
        if let Some(channel) = self.unconfirmed_live() {
            return Ok(channel);
        }
        let channel =
            UnconfirmedChannel::new(open_channel(connection, false, 0).await?, self.window);
        *self.unconfirmed.lock().unwrap() = Some(channel.clone());
        Ok(channel)
    }

    /// The unconfirmed publishes' channel when it is open now.
    pub(crate) fn unconfirmed_live(&self) -> Option<UnconfirmedChannel> {
        let guard = self.unconfirmed.lock().unwrap();
        guard
            .as_ref()
            .filter(|c| c.channel().status().connected())
            .cloned()
    }

    /// See [`Slot::retire`]: channel `id` of slot `index`, whichever of
    /// its two channels that is.
    pub(crate) fn retire(&self, index: usize, id: u16) {
        self.slots[index % self.slots.len()].retire(id);
        self.mandatory[index % self.mandatory.len()].retire(id);
    }
}
